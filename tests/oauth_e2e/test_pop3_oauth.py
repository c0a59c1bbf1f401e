"""POP3 through mailtee to a real Dovecot that accepts only OAuth2 tokens (passdb oauth2,
RFC 7662 introspection against the test authorization server). Clients (poplib, mpop)
log in to mailtee with a local password; mailtee logs in upstream with XOAUTH2 in the
two-step form (`AUTH XOAUTH2`, `+`, response)."""

from __future__ import annotations

import json
import logging
import poplib

import pytest
import trio

from fixtures.dovecot_oauth import start_oauth_dovecot
from fixtures.pop3_clients import run_mpop
from fixtures.proxy import wait_for_reports

from .conftest import LOCAL_PASSWORDS, Deployment
from .oauth_env import (
    MAILBOXES,
    check_no_secrets,
    ctx,
    pop3_fetch,
    pop3_login_error,
    service_log,
    setup_accounts,
)

pytestmark = pytest.mark.e2e


def _msg(n: int, to: str) -> bytes:
    return (
        f"From: sender@example.org\r\nTo: {to}\r\nSubject: oauth test {n}\r\n"
        f"Message-ID: <oauth-{n}@example.org>\r\n\r\nbody {n}\r\n"
    ).encode()


async def test_pop3_local_login_through_dovecot_oauth2(
    deployment: Deployment, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    d = deployment
    setup_accounts(d)
    with start_oauth_dovecot(d.oauth.introspection_url(), MAILBOXES) as dovecot:
        alice_msgs = [dovecot.deliver("alice@example.test", _msg(i, "alice")) for i in range(2)]
        shared_msgs = [
            dovecot.deliver("shared@example.test", _msg(10 + i, "shared")) for i in range(3)
        ]
        d.add_listener(name="pop-person", protocol="pop3", client_tls="implicit",
                       target_port=dovecot.port, local_login=True)  # fmt: skip
        d.add_listener(name="pop-shared", protocol="pop3", client_tls="starttls",
                       target_port=dovecot.port, target_account="shared")  # fmt: skip
        service = await d.start(nursery)
        person, shared = service.ports["pop-person"], service.ports["pop-shared"]

        # Per-person account: alice logs in with her local password over implicit TLS.
        got = await trio.to_thread.run_sync(
            pop3_fetch, person, "alice", LOCAL_PASSWORDS["alice"], d.ca_file, False
        )
        assert got == alice_msgs
        # ... or with her address as the login, through mpop (USER/PASS after TLS).
        run = await trio.to_thread.run_sync(
            lambda: run_mpop(
                "127.0.0.1",
                person,
                user="alice@example.test",
                password=LOCAL_PASSWORDS["alice"],
                workdir=d.root / "mpop",
                tls="implicit",
                ca_file=d.ca_file,
                tls_name="localhost",
            )  # fmt: skip
        )
        run.check()
        assert len(run.messages) == 2
        # The listener account: bob (any local user) reads the shared mailbox after STLS.
        got = await trio.to_thread.run_sync(
            pop3_fetch, shared, "bob", LOCAL_PASSWORDS["bob"], d.ca_file, True
        )
        assert got == shared_msgs

        # Each RETR left an .eml/.mpr pair, as for any POP3 listener.
        reports = await wait_for_reports(d.reports_dir, 2 + 2 + 3)
        assert len(reports) == 2 + 2 + 3
        by_user = sorted({(r["listener"], r["pop3"]["user"]) for r in reports})
        # The local user is recorded (whether the login was typed as name or address).
        assert by_user == [("pop-person", "alice"), ("pop-shared", "bob")]
        assert {r.eml for r in reports} == set(alice_msgs + shared_msgs)

        # Bob has no account of his own: the per-person listener refuses him.
        err = await trio.to_thread.run_sync(
            pop3_login_error, person, "bob", LOCAL_PASSWORDS["bob"], d.ca_file
        )
        assert err.startswith("-ERR [AUTH]") and "no mail account" in err
        # A wrong local password: refused by mailtee, nothing asked upstream.
        before = d.oauth.state.introspections
        err = await trio.to_thread.run_sync(
            pop3_login_error, person, "alice", "not-her-password", d.ca_file
        )
        assert err == "-ERR [AUTH] authentication failed"
        assert d.oauth.state.introspections == before

        # No password before TLS on the STLS listener; CAPA shows what the login accepts.
        p = await trio.to_thread.run_sync(lambda: poplib.POP3("127.0.0.1", shared, timeout=30))
        caps = await trio.to_thread.run_sync(p.capa)
        assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
        with pytest.raises(poplib.error_proto, match="STLS"):
            await trio.to_thread.run_sync(p.user, "bob")
        await trio.to_thread.run_sync(p.stls, ctx(d.ca_file))
        caps = await trio.to_thread.run_sync(p.capa)
        assert caps["SASL"] == ["PLAIN"] and "USER" in caps and "STLS" not in caps
        await trio.to_thread.run_sync(p.quit)

        # Dovecot saw only tokens (introspection), and only valid ones got in.
        assert d.oauth.state.introspections == 3  # one per upstream login
        assert dovecot.log_text().count("method=XOAUTH2") == 3
        status = await d.status()
        assert status.returncode == 0
        accounts = {a["name"]: a for a in json.loads(status.stdout)["service"]["accounts"]}
        assert accounts["alice"]["state"] == "ok" and accounts["shared"]["state"] == "ok"
        check_no_secrets(d, service_log(caplog), status.stdout, dovecot.log_text(),
                         *(r.mpr_path.read_text() for r in reports))  # fmt: skip


async def test_pop3_oauthbearer_through_dovecot(
    deployment: Deployment, nursery: trio.Nursery
) -> None:
    d = deployment
    run = d.add_device_account("shared", "shared@example.test", "--sasl", "oauthbearer")
    assert run.returncode == 0, run.stderr
    with start_oauth_dovecot(d.oauth.introspection_url(), MAILBOXES) as dovecot:
        msg = dovecot.deliver("shared@example.test", b"Subject: ob\r\n\r\nRFC 7628\r\n")
        d.add_listener(name="pop-ob", protocol="pop3", client_tls="implicit",
                       target_port=dovecot.port, target_account="shared")  # fmt: skip
        service = await d.start(nursery)
        got = await trio.to_thread.run_sync(
            pop3_fetch, service.ports["pop-ob"], "bob", LOCAL_PASSWORDS["bob"], d.ca_file, False
        )
        assert got == [msg]
        assert "method=OAUTHBEARER" in dovecot.log_text()
