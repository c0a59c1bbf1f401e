"""OAuthSmtpRelay on bytes: XOAUTH2 injected for a listener account; local logins
(PLAIN/LOGIN over TLS only) turned into the person's XOAUTH2; fail closed without a token."""

from __future__ import annotations

import base64

from core_driver import OK, RESPONSE, CoreDriver, to_client, to_upstream

from proxy.actions import Close, Side
from proxy.login import LoginResult
from proxy.settings import RelaySettings
from proxy.smtp.oauth_relay import OAuthSmtpRelay

GREETING = b"220 smtp.provider.test ESMTP\r\n"
EHLO = (
    b"250-smtp.provider.test\r\n250-PIPELINING\r\n250-AUTH XOAUTH2 OAUTHBEARER\r\n250 8BITMIME\r\n"
)


def account_core(token: LoginResult | None) -> CoreDriver:
    core = OAuthSmtpRelay(RelaySettings(target_user="shared@ex.test"), mode="account",
                          account="shared")  # fmt: skip
    if token is not None:
        core.provide_token(token)
    d = CoreDriver(core)
    core.start()
    assert to_client(d.upstream(GREETING)) == GREETING
    return d


def local_core(client_tls: str = "starttls", **kw: object) -> CoreDriver:
    core = OAuthSmtpRelay(RelaySettings(client_tls=client_tls), mode="local")
    d = CoreDriver(core, **kw)  # type: ignore[arg-type]
    core.start()
    d.upstream(GREETING)
    return d


def closed(d: CoreDriver) -> bool:
    return any(isinstance(a, Close) for a in d.log)


def test_account_mode_injects_xoauth2_after_ehlo() -> None:
    d = account_core(OK)
    assert d.client(b"EHLO pc\r\n") == b""
    acts = d.upstream(EHLO)
    assert to_upstream(acts) == b"AUTH XOAUTH2 " + RESPONSE + b"\r\n"
    reply = to_client(d.upstream(b"235 2.7.0 Authentication successful\r\n"))
    assert reply.startswith(b"250-smtp.provider.test") and b"AUTH" not in reply
    assert d.client(b"AUTH PLAIN AGEAYg==\r\n").startswith(b"503")  # not needed
    d.client(b"MAIL FROM:<a@ex.test>\r\n")
    assert d.sent_upstream.endswith(b"MAIL FROM:<a@ex.test>\r\n")


def test_account_mode_without_token_fails_closed() -> None:
    for outcome, code in (("temp", b"454 4.7.0"), ("reauth", b"535 5.7.8"), (None, b"454 4.7.0")):
        d = account_core(LoginResult(outcome) if outcome else None)
        d.client(b"EHLO pc\r\n")
        out = to_client(d.upstream(EHLO))
        assert out.startswith(code) and closed(d)
        assert b"AUTH" not in d.sent_upstream and b"MAIL" not in d.sent_upstream


def test_account_mode_provider_refuses_token() -> None:
    d = account_core(OK)
    d.client(b"EHLO pc\r\n")
    d.upstream(EHLO)
    acts = d.upstream(b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n")
    assert to_upstream(acts) == b"\r\n"  # RFC 7628 3.2.3
    out = to_client(d.upstream(b"535 5.7.139 Authentication unsuccessful\r\n"))
    assert out.startswith(b"421 4.7.0") and closed(d)


def test_local_mode_advertises_and_requires_local_login() -> None:
    d = local_core()
    d.client(b"EHLO pc\r\n")
    out = to_client(d.upstream(EHLO))
    assert b"AUTH" not in out and b"STARTTLS" in out  # no password before TLS
    assert d.client(b"AUTH PLAIN AGFsaWNlAHB3\r\n").startswith(b"538")
    assert d.client(b"MAIL FROM:<a@ex.test>\r\n").startswith(b"530")
    assert b"MAIL" not in d.sent_upstream and not d.logins
    d.client(b"STARTTLS\r\n")
    d.client(b"EHLO pc\r\n")
    out = to_client(d.upstream(EHLO))
    assert out.endswith(b"250 AUTH PLAIN LOGIN\r\n") and b"XOAUTH2" not in out
    assert d.client(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0local pw") + b"\r\n") == b""
    assert (d.logins[-1].login, d.logins[-1].password) == ("alice", "local pw")
    assert d.sent_upstream.endswith(b"AUTH XOAUTH2 " + RESPONSE + b"\r\n")
    assert to_client(d.upstream(b"235 2.7.0 ok\r\n")) == b"235 2.7.0 Authentication successful\r\n"
    d.client(b"MAIL FROM:<alice@ex.test>\r\n")
    assert d.sent_upstream.endswith(b"MAIL FROM:<alice@ex.test>\r\n")


def test_local_mode_auth_login_and_pipelining_waits() -> None:
    d = local_core("implicit")
    d.client(b"EHLO pc\r\n")
    d.upstream(EHLO)
    assert d.client(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert d.client(base64.b64encode(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    # The password line and a pipelined MAIL: MAIL must wait for the login's outcome.
    d.client(base64.b64encode(b"pw") + b"\r\nMAIL FROM:<alice@ex.test>\r\n")
    assert d.logins[-1].password == "pw" and b"MAIL" not in d.sent_upstream
    assert d.core.reading is Side.UPSTREAM  # type: ignore[attr-defined]
    d.upstream(b"235 2.7.0 ok\r\n")
    assert d.sent_upstream.endswith(b"MAIL FROM:<alice@ex.test>\r\n")


def test_local_mode_refusals() -> None:
    d = local_core("implicit", answer=lambda v: LoginResult("bad"))
    d.client(b"EHLO pc\r\n")
    d.upstream(EHLO)
    plain = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0nope") + b"\r\n"
    assert d.client(plain).startswith(b"535 5.7.8")
    assert d.client(plain).startswith(b"535 5.7.8")
    assert d.client(plain).startswith(b"421") and closed(d)
    assert b"AUTH" not in d.sent_upstream
    t = local_core("implicit", answer=lambda v: LoginResult("temp"))
    t.client(b"EHLO pc\r\n")
    t.upstream(EHLO)
    assert t.client(plain).startswith(b"454 4.7.0")
    assert t.client(b"AUTH CRAM-MD5\r\n").startswith(b"504")
    assert t.client(b"AUTH PLAIN " + base64.b64encode(b"bob\0alice\0x") + b"\r\n").startswith(
        b"535"
    )
    # The provider's own refusal of the person's token reaches the person verbatim.
    p = local_core("implicit")
    p.client(b"EHLO pc\r\n")
    p.upstream(EHLO)
    p.client(plain)
    reply = b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled\r\n"
    assert to_client(p.upstream(reply)) == reply and not closed(p)


def test_an_echoed_token_reaches_neither_the_client_nor_the_log() -> None:
    """A provider that quotes the AUTH line back (#10 item 5, for OAuth2 tokens)."""
    token = b"ya29.Secret-Bearer-Token"
    response = base64.b64encode(b"user=shared@ex.test\x01auth=Bearer " + token + b"\x01\x01")
    d = account_core(LoginResult("ok", user="shared", response=response, account="shared"))
    d.client(b"EHLO pc\r\n")
    assert to_upstream(d.upstream(EHLO)) == b"AUTH XOAUTH2 " + response + b"\r\n"
    for echo in (
        b"334 you sent " + token + b"\r\n",  # a challenge: relayed nowhere but logged
        b"535-5.7.8 bad token " + token + b"\r\n535 5.7.8 in AUTH XOAUTH2 " + response + b"\r\n",
    ):
        d.upstream(echo)
    out = to_client(d.log)
    assert token not in out and response not in out
    logs = " ".join(str(getattr(a, "message", "")) for a in d.log)
    assert token.decode() not in logs and response.decode() not in logs
