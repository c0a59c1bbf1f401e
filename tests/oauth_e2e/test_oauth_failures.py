"""Fail closed without a token: the token endpoint down, a revoked grant. Clients get
the documented replies, nothing reaches the provider's mailbox or queue, one alert per
account, and `account show` says what to do."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio

from accounts import tokens
from fixtures import mails
from fixtures.smtp_clients import smtplib_session

from .conftest import LOCAL_PASSWORDS, Deployment
from .oauth_env import (
    check_no_secrets,
    pop3_fetch,
    pop3_login_error,
    provider,
    service_log,
    setup_accounts,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _retry_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every session asks the endpoint again (no fail-fast window): the alert must still
    # be raised once, not once per session.
    monkeypatch.setattr(tokens, "RETRY_AFTER", 0.0)


def _listeners(d: Deployment, smtp_port: int, pop3_port: int) -> None:
    d.add_listener(name="smtp-shared", protocol="smtp", target_port=smtp_port,
                   target_account="shared")  # fmt: skip
    d.add_listener(name="pop-shared", protocol="pop3", client_tls="implicit",
                   target_port=pop3_port, target_account="shared")  # fmt: skip
    d.add_listener(name="pop-person", protocol="pop3", client_tls="implicit",
                   target_port=pop3_port, local_login=True)  # fmt: skip


def _alerts(status: str) -> list[str]:
    errors = json.loads(status)["service"]["last_errors"]
    return [e["summary"] for e in errors if e["kind"] == "account"]


async def test_token_endpoint_down_fails_closed_with_one_alert(
    deployment: Deployment,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    smtp_upstream: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    d = deployment
    setup_accounts(d)
    sink = smtp_upstream()
    d.mail_alerts_to(sink.port)
    with provider(d) as (dovecot, postfix):
        dovecot.deliver("shared@example.test", b"Subject: x\r\n\r\nx\r\n")
        _listeners(d, postfix.port, dovecot.port)
        d.oauth.state.down = True
        service = await d.start(nursery)
        for _ in range(3):
            res = await smtplib_session(service.ports["smtp-shared"], [mails.plain(1)])
            assert res.ehlo is not None and res.ehlo[0] == 454, res
            assert b"try again later" in res.ehlo[1] and not res.transactions
            err = await trio.to_thread.run_sync(
                pop3_login_error, service.ports["pop-shared"], "bob", LOCAL_PASSWORDS["bob"],
                d.ca_file,
            )  # fmt: skip
            assert err.startswith("-ERR [SYS/TEMP]")
            err = await trio.to_thread.run_sync(
                pop3_login_error, service.ports["pop-person"], "alice",
                LOCAL_PASSWORDS["alice"], d.ca_file,
            )  # fmt: skip
            assert err.startswith("-ERR [SYS/TEMP]")
        # Each session asked the endpoint (no retry window here) ...
        assert d.oauth.count("refresh_token") == 9
        # ... but nothing was relayed or fetched, and each account alerted once.
        assert postfix.queue_ids() == []
        assert "Login:" not in dovecot.log_text() and d.oauth.state.introspections == 0
        assert not list(d.reports_dir.glob("*.eml"))
        status = await d.status()
        assert sorted(_alerts(status.stdout)) == [
            "account alice: no OAuth2 token", "account shared: no OAuth2 token",
        ]  # fmt: skip
        # The alert mail went out once (alerts of one kind are rate-limited together).
        [tx] = await sink.wait_transactions(1)
        assert b"Subject: [mailtee mailtee.test] account: account shared: no OAuth2 token" in (
            tx.content
        )
        show = json.loads(d.cli("account", "show", "shared", "--json").stdout)
        assert show["state"] == "error" and "HTTP 503" in show["message"]
        assert "token endpoint" in show["action"]
        await trio.sleep(1)  # nothing more is mailed for the later failed sessions
        assert len(sink.transactions) == 1
        check_no_secrets(d, service_log(caplog), status.stdout, json.dumps(show),
                         tx.content.decode())  # fmt: skip


async def test_revoked_grant_says_reauth_and_reauth_recovers(
    deployment: Deployment, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    d = deployment
    setup_accounts(d)
    with provider(d) as (dovecot, postfix):
        msg = dovecot.deliver("shared@example.test", b"Subject: y\r\n\r\ny\r\n")
        _listeners(d, postfix.port, dovecot.port)
        d.oauth.revoke_user("shared@example.test")  # the tenant admin revoked consent
        service = await d.start(nursery)
        res = await smtplib_session(service.ports["smtp-shared"], [mails.plain(1)])
        assert res.ehlo is not None and res.ehlo[0] == 535 and not res.transactions
        assert b"signed in again" in res.ehlo[1]
        err = await trio.to_thread.run_sync(
            pop3_login_error, service.ports["pop-shared"], "bob", LOCAL_PASSWORDS["bob"],
            d.ca_file,
        )  # fmt: skip
        assert err.startswith("-ERR [AUTH]") and "signed in again" in err
        assert postfix.queue_ids() == [] and "Login:" not in dovecot.log_text()

        show = d.cli("account", "show", "shared")
        assert "reauth" in show.stdout and "proxy-admin account reauth shared" in show.stdout
        assert "invalid_grant" in show.stdout
        status = await d.status()
        assert _alerts(status.stdout) == ["account shared: no OAuth2 token"]

        # The operator signs in again; the running service picks the new grant up.
        run = await trio.to_thread.run_sync(d.reauth_device, "shared", "shared@example.test")
        assert run.returncode == 0, run.stderr
        assert json.loads(d.cli("account", "show", "shared", "--json").stdout)["state"] == "ok"
        res = await smtplib_session(service.ports["smtp-shared"], [mails.plain(2)])
        assert res.transactions and res.transactions[0].delivered, res
        got = await trio.to_thread.run_sync(
            pop3_fetch, service.ports["pop-shared"], "bob", LOCAL_PASSWORDS["bob"],
            d.ca_file, False,
        )  # fmt: skip
        assert got == [msg]
        assert len(postfix.queue_ids()) == 1
        check_no_secrets(d, service_log(caplog), status.stdout, show.stdout)
