"""SMTP through mailtee to a real Postfix smtpd whose SASL is Dovecot with passdb oauth2:
Postfix relays only for clients that authenticated with a valid access token. mailtee
sends AUTH XOAUTH2 (listener account) or logs the person in locally first (local login).
"""

from __future__ import annotations

import logging
import re

import pytest
import trio

from fixtures import mails
from fixtures.proxy import wait_for_reports
from fixtures.smtp_clients import msmtp, require_swaks_tls, smtplib_session, swaks

from .conftest import LOCAL_PASSWORDS, Deployment
from .oauth_env import check_no_secrets, provider, service_log, setup_accounts

pytestmark = pytest.mark.e2e


def _queued_senders(postfix) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.split(b"\n", 1)[0].decode() for m in postfix.queued()]


async def test_smtp_oauth_account_and_local_login_through_postfix(
    deployment: Deployment, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    require_swaks_tls()
    d = deployment
    setup_accounts(d)
    with provider(d) as (dovecot, postfix):
        # Without a token Postfix relays nothing (the check that the server is strict).
        direct = await smtplib_session(postfix.port, [mails.plain(1)])
        assert direct.transactions[0].rcpts[0][0] == 554
        d.add_listener(name="smtp-shared", protocol="smtp", target_port=postfix.port,
                       target_account="shared")  # fmt: skip
        d.add_listener(name="smtp-person", protocol="smtp", client_tls="starttls",
                       target_port=postfix.port, local_login=True)  # fmt: skip
        service = await d.start(nursery)
        shared, person = service.ports["smtp-shared"], service.ports["smtp-person"]

        # (a) the listener's account: clients send without AUTH (devices, scanners).
        res = await smtplib_session(shared, [mails.plain(1), mails.plain(2)])
        assert [t.delivered for t in res.transactions] == [True, True], res
        assert "auth" not in res.esmtp_features
        sw = await swaks(shared, "--to", "bob@example.net", "--from", "scanner@example.test")
        assert sw.returncode == 0, sw.stdout.decode()[-600:]

        # (b) local login: msmtp and smtplib with alice's local password after STARTTLS.
        mail = mails.plain(3, sender="alice@example.test")
        ms = await msmtp(person, mail, workdir=d.root, tls="starttls", ca_file=d.ca_file,
                         user="alice", password=LOCAL_PASSWORDS["alice"])  # fmt: skip
        assert ms.returncode == 0, ms.stderr.decode()
        res = await smtplib_session(
            person, [mails.plain(4)], tls="starttls", ca_file=d.ca_file,
            login=("alice@example.test", LOCAL_PASSWORDS["alice"]),
        )  # fmt: skip
        assert res.auth is not None and res.auth[0] == 235, res
        assert res.esmtp_features["auth"].strip() == "PLAIN LOGIN"
        assert res.transactions[0].delivered
        sw = await swaks(person, "--tls", "--tls-ca-path", str(d.ca_file), "--auth", "LOGIN",
                         "--auth-user", "alice", "--auth-password", LOCAL_PASSWORDS["alice"],
                         "--to", "carol@example.net", "--from", "alice@example.test")  # fmt: skip
        assert sw.returncode == 0, sw.stdout.decode()[-800:]

        # Refusals: no AUTH offered before TLS, MAIL before AUTH, a wrong password.
        plain = await smtplib_session(person, [mails.plain(5)])
        assert "auth" not in plain.esmtp_features and "starttls" in plain.esmtp_features
        assert plain.transactions[0].mail[0] == 530
        wrong = await smtplib_session(
            person, [mails.plain(6)], tls="starttls", ca_file=d.ca_file,
            login=("alice", "not-the-password"),
        )  # fmt: skip
        assert wrong.auth is not None and wrong.auth[0] == 535
        nobody = await smtplib_session(
            person, [mails.plain(7)], tls="starttls", ca_file=d.ca_file,
            login=("bob", LOCAL_PASSWORDS["bob"]),
        )  # fmt: skip
        assert nobody.auth is not None and nobody.auth[0] == 535
        assert b"No mail account" in nobody.auth[1]

        # Postfix holds exactly the six accepted messages, each sent with XOAUTH2 as the
        # right mailbox; mailtee archived each as an .eml/.mpr pair.
        assert len(postfix.queue_ids()) == 6
        log = postfix.log_text()
        users = re.findall(r"sasl_method=XOAUTH2, sasl_username=(\S+)", log)
        assert sorted(users) == ["alice@example.test"] * 3 + ["shared@example.test"] * 3
        reports = await wait_for_reports(d.reports_dir, 6)
        assert len(reports) == 6
        assert all(r["upstream"]["outcome"] == "delivered" for r in reports)
        assert sorted(str(r["smtp"]["auth_user"]) for r in reports) == (
            ["None"] * 3 + ["alice"] * 3
        )
        assert {r.eml for r in reports} >= {mails.plain(1).data, mails.plain(4).data}
        mprs = [r.mpr_path.read_text() for r in reports]
        check_no_secrets(d, service_log(caplog), log, dovecot.log_text(), *mprs)
