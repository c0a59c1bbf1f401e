"""Shared pieces of the OAuth2 end-to-end tests: Postfix with Dovecot SASL (oauth2
passdb), clients, and the "no secret anywhere" check."""

from __future__ import annotations

import contextlib
import poplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.dovecot_oauth import OAuthDovecot, start_oauth_dovecot
from fixtures.postfix import PostfixServer, start_postfix

from .conftest import LOCAL_PASSWORDS, Deployment

MAILBOXES = {"alice@example.test": "unused", "shared@example.test": "unused"}


@contextlib.contextmanager
def provider(d: Deployment) -> Iterator[tuple[OAuthDovecot, PostfixServer]]:
    """Dovecot (POP3 + SASL, tokens only) and a Postfix smtpd authenticating through it
    that relays only for SASL-authenticated clients and holds what it accepts."""
    with start_oauth_dovecot(d.oauth.introspection_url(), MAILBOXES) as dovecot:
        main_cf = {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": f"inet:127.0.0.1:{dovecot.auth_port}",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        }
        with start_postfix(main_cf=main_cf) as postfix:
            yield dovecot, postfix


def service_log(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged in this process except the test authorization server's own
    grant modules (authlib.oauth2.rfcNNNN, which log the tokens they issue)."""
    return "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("authlib.oauth2.rfc")
    )


def check_no_secrets(d: Deployment, *texts: str) -> None:
    blob = "".join(texts) + "".join(d.outputs)
    for tok in d.oauth.issued_access_tokens() + d.oauth.issued_refresh_tokens():
        assert tok not in blob
    for pw in LOCAL_PASSWORDS.values():
        assert pw not in blob


def ctx(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def pop3_fetch(port: int, user: str, password: str, ca_file: Path, stls: bool) -> list[bytes]:
    if stls:
        p = poplib.POP3("127.0.0.1", port, timeout=30)
        p.stls(ctx(ca_file))
    else:
        p = poplib.POP3_SSL("127.0.0.1", port, timeout=30, context=ctx(ca_file))
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        return [b"\r\n".join(p.retr(i + 1)[1]) + b"\r\n" for i in range(count)]
    finally:
        p.quit()


def pop3_login_error(port: int, user: str, password: str, ca_file: Path) -> str:
    p = poplib.POP3_SSL("127.0.0.1", port, timeout=30, context=ctx(ca_file))
    try:
        p.user(user)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(password)
        return e.value.args[0].decode()
    finally:
        p.close()


def setup_accounts(d: Deployment) -> None:
    assert d.add_device_account("shared", "shared@example.test").returncode == 0
    run = d.add_device_account(
        "alice", "alice@example.test", "--password-stdin", stdin=LOCAL_PASSWORDS["alice"] + "\n"
    )
    assert run.returncode == 0, run.stderr
