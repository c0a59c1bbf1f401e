"""LocalLoginPop3 on bytes: mailtee's own AUTHORIZATION state, then XOAUTH2 upstream in
the two-step form, then the ordinary relay (RETR archived)."""

from __future__ import annotations

import base64

from core_driver import OK, RESPONSE, CoreDriver, to_client, to_upstream

from proxy.actions import BeginMessage, Close, Side
from proxy.login import LoginResult
from proxy.pop3.local_login import LocalLoginPop3
from proxy.settings import RelaySettings

GREETING = b"+OK Dovecot ready.\r\n"


def started(client_tls: str = "implicit", **kw: object) -> CoreDriver:
    d = CoreDriver(LocalLoginPop3(RelaySettings(client_tls=client_tls)), **kw)  # type: ignore[arg-type]
    d.core.start()  # type: ignore[attr-defined]
    d.drain()
    out = to_client(d.upstream(GREETING))
    assert out == b"+OK mailtee POP3 ready\r\n"  # the provider's greeting is not shown
    return d


def logged_in(d: CoreDriver) -> None:
    assert d.client(b"USER alice\r\n") == b"+OK send PASS\r\n"
    assert d.client(b"PASS local pw\r\n") == b""  # the answer waits for the provider
    assert d.logins[-1].login == "alice" and d.logins[-1].password == "local pw"
    assert d.sent_upstream == b"AUTH XOAUTH2\r\n"  # no initial response (Office 365)
    assert to_upstream(d.upstream(b"+ \r\n")) == RESPONSE + b"\r\n"
    assert to_client(d.upstream(b"+OK Logged in.\r\n")) == b"+OK logged in\r\n"


def test_login_then_relay_and_archive() -> None:
    d = started()
    logged_in(d)
    assert d.client(b"STAT\r\n") == b""
    assert to_client(d.upstream(b"+OK 1 10\r\n")) == b"+OK 1 10\r\n"
    d.client(b"RETR 1\r\n")
    assert to_upstream(d.log).endswith(b"UIDL 1\r\n")
    d.upstream(b"+OK 1 uid-1\r\n")
    acts = d.upstream(b"+OK 10 octets\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    assert to_client(acts).endswith(b"hi\r\n.\r\n")
    begin = [a for a in d.log if isinstance(a, BeginMessage)]
    assert begin and begin[0].report.pop3 is not None and begin[0].report.pop3.user == "alice"


def test_nothing_reaches_the_provider_before_login() -> None:
    d = started()
    for cmd in (b"STAT\r\n", b"LIST\r\n", b"RETR 1\r\n", b"DELE 1\r\n", b"NOOP\r\n"):
        assert d.client(cmd) == b"-ERR [AUTH] log in first\r\n"
    assert d.client(b"APOP alice 0123\r\n").startswith(b"-ERR APOP")
    assert d.sent_upstream == b"" and d.core.reading is Side.CLIENT  # type: ignore[attr-defined]


def test_stls_first_and_no_injection() -> None:
    d = started("starttls")
    caps = d.client(b"CAPA\r\n")
    assert b"STLS\r\n" in caps and b"USER" not in caps and b"SASL" not in caps
    assert d.client(b"USER alice\r\n").startswith(b"-ERR [AUTH] log in only after STLS")
    assert d.client(b"AUTH PLAIN\r\n").startswith(b"-ERR [AUTH] log in only after STLS")
    assert d.client(b"STLS\r\n") == b"+OK Begin TLS negotiation\r\n"
    caps = d.client(b"CAPA\r\n")
    assert b"SASL PLAIN\r\n" in caps and b"USER\r\n" in caps and b"STLS" not in caps
    # A second session: plaintext pipelined behind STLS ends it (CVE-2011-0411 class).
    e = started("starttls")
    e.client(b"STLS\r\nUSER alice\r\n")
    assert any(isinstance(a, Close) for a in e.log) and e.sent_upstream == b""


def test_auth_plain_initial_and_continuation() -> None:
    d = started()
    token = base64.b64encode(b"\0alice\0pw").decode().encode()
    d.client(b"AUTH PLAIN " + token + b"\r\n")
    assert (d.logins[-1].login, d.logins[-1].password) == ("alice", "pw")
    e = started()
    assert e.client(b"AUTH PLAIN\r\n") == b"+ \r\n"
    e.client(base64.b64encode(b"alice\0alice\0pw2") + b"\r\n")
    assert e.logins[-1].password == "pw2"
    f = started()
    out = f.client(b"AUTH PLAIN " + base64.b64encode(b"admin\0alice\0pw") + b"\r\n")
    assert out == b"-ERR [AUTH] authentication failed\r\n" and not f.logins
    assert f.client(b"AUTH CRAM-MD5\r\n").startswith(b"-ERR unsupported")


def test_failed_logins_and_missing_tokens() -> None:
    bad = started(answer=lambda v: LoginResult("bad"))
    for _ in range(2):
        bad.client(b"USER alice\r\n")
        assert bad.client(b"PASS x\r\n") == b"-ERR [AUTH] authentication failed\r\n"
    bad.client(b"USER alice\r\n")
    bad.client(b"PASS x\r\n")
    assert any(isinstance(a, Close) for a in bad.log)  # the third failure ends it
    for outcome, reply in (
        ("temp", b"-ERR [SYS/TEMP] cannot get a sign-in token"),
        ("reauth", b"-ERR [AUTH] the mail account must be signed in again"),
        ("no_account", b"-ERR [AUTH] no mail account"),
    ):
        d = started(answer=lambda v, o=outcome: LoginResult(o))
        d.client(b"USER alice\r\n")
        assert d.client(b"PASS x\r\n").startswith(reply)
        assert any(isinstance(a, Close) for a in d.log) and d.sent_upstream == b""


def test_provider_refuses_the_token() -> None:
    d = started()
    d.client(b"USER alice\r\nPASS pw\r\n")
    d.upstream(b"+ \r\n")
    # RFC 7628 3.2.3: an error challenge is answered with an empty response.
    acts = d.upstream(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
    assert to_upstream(acts) == b"\r\n"
    acts = d.upstream(b"-ERR [AUTH] Authentication failed.\r\n")
    assert to_client(acts) == b"-ERR [AUTH] the mail provider refused the account's sign-in\r\n"
    assert any(isinstance(a, Close) for a in acts)
    assert OK.response not in to_client(d.log)


def test_provider_greeting_error_reaches_the_client() -> None:
    d = CoreDriver(LocalLoginPop3(RelaySettings(client_tls="implicit")))
    d.core.start()  # type: ignore[attr-defined]
    acts = d.upstream(b"-ERR [SYS/TEMP] maintenance\r\n")
    assert to_client(acts) == b"-ERR [SYS/TEMP] maintenance\r\n"
    assert any(isinstance(a, Close) for a in acts)


def test_commands_pipelined_behind_pass_reach_the_relay() -> None:
    d = started()
    d.client(b"USER alice\r\nPASS pw\r\nSTAT\r\n")
    assert d.sent_upstream == b"AUTH XOAUTH2\r\n"  # STAT waits for the login
    d.upstream(b"+ \r\n")
    acts = d.upstream(b"+OK Logged in.\r\n")
    assert to_client(acts) == b"+OK logged in\r\n" and to_upstream(acts) == b"STAT\r\n"
    assert to_client(d.upstream(b"+OK 0 0\r\n")) == b"+OK 0 0\r\n"
