"""Mailbox pulling with OAuth2 (`[[mailbox]] account = NAME`) against a real Dovecot that
accepts only access tokens (passdb oauth2, RFC 7662 introspection against the test
authorization server): IMAP and POP3, through the real `proxy-admin mailbox add` and
`proxy-admin pull`."""

from __future__ import annotations

import json

import pytest
import trio

from admin.config import save_config
from archive.pull import imap as pull_imap
from archive.pull import pop3 as pull_pop3
from archive.pull.common import Credential, PullError
from fixtures.dovecot_oauth import OAuthImapDovecot, start_oauth_dovecot
from fixtures.proxy import read_reports, wait_for_reports

from .conftest import Deployment
from .oauth_env import MAILBOXES, check_no_secrets, setup_accounts

pytestmark = pytest.mark.e2e


def _msg(n: int) -> bytes:
    return (
        f"From: sender@example.org\r\nTo: shared@example.test\r\nSubject: pulled {n}\r\n"
        f"Message-ID: <pull-oauth-{n}@example.org>\r\n\r\nbody {n}\r\n"
    ).encode()


def _add(d: Deployment, name: str, protocol: str, port: int, account: str) -> None:
    run = d.cli(
        "mailbox", "add", name, "--protocol", protocol, "--server", f"127.0.0.1:{port}",
        "--tls", "none", "--user", "shared@example.test", "--account", account,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"OAuth2 account {account}" in run.stdout


def _pull(d: Deployment, name: str) -> dict:
    run = d.cli("pull", name, "--json")
    return {"rc": run.returncode, **json.loads(run.stdout)["mailboxes"][0]}


def test_imap_and_pop3_mailboxes_pull_with_an_oauth2_account(deployment: Deployment) -> None:
    d = deployment
    setup_accounts(d)  # "shared": a listener account; "alice": locked by her password
    with start_oauth_dovecot(d.oauth.introspection_url(), MAILBOXES, imap=True) as dovecot:
        assert isinstance(dovecot, OAuthImapDovecot)
        for n in range(3):
            dovecot.add("shared@example.test", "INBOX", _msg(n))
        _add(d, "shared-imap", "imap", dovecot.imap_port, "shared")
        _add(d, "shared-pop", "pop3", dovecot.port, "shared")
        before = d.oauth.state.introspections

        imap = _pull(d, "shared-imap")
        assert imap["rc"] == 0 and imap["ok"], imap
        assert imap["new"] == 3
        pop = _pull(d, "shared-pop")
        assert pop["rc"] == 0 and pop["ok"], pop
        assert pop["new"] == 3
        # Dovecot let each login in only after asking the authorization server
        assert d.oauth.state.introspections == before + 2
        assert dovecot.log_text().count("method=XOAUTH2") >= 2

        reports = read_reports(d.reports_dir)
        assert sorted(r["protocol"] for r in reports) == ["imap"] * 3 + ["pop3-pull"] * 3
        assert {r["pull"]["mailbox"] for r in reports} == {"shared-imap", "shared-pop"}
        assert {r.eml.replace(b"\r\n", b"\n") for r in reports} == {
            _msg(n).replace(b"\r\n", b"\n") for n in range(3)
        }
        again = _pull(d, "shared-imap")
        assert again["ok"] and again["new"] == 0  # nothing new: nothing fetched again

        # An account with `sasl = "oauthbearer"`: the pulls log in with OAUTHBEARER.
        config = d.config()
        config.account = [
            a.model_copy(update={"sasl": "oauthbearer"}) if a.name == "shared" else a
            for a in config.account
        ]
        save_config(config, d.config_path)
        dovecot.add("shared@example.test", "INBOX", _msg(3))
        dovecot.deliver("shared@example.test", _msg(4))
        for name in ("shared-imap", "shared-pop"):
            r = _pull(d, name)
            assert r["ok"] and r["new"] >= 1, r
        assert dovecot.log_text().count("method=OAUTHBEARER") >= 2

        # A per-person account is locked by its owner's password: a mailbox cannot use
        # it (nobody is logged in when it pulls), and the CLI says so in one line.
        run = d.cli("mailbox", "set", "shared-pop", "--account", "alice")
        assert run.returncode == 2 and "locked by its owner's local password" in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
        assert d.config().get_mailbox("shared-pop").account == "shared"  # unchanged
        # A mailbox naming no account is refused when it is set.
        run = d.cli("mailbox", "set", "shared-pop", "--account", "nobody")
        assert run.returncode == 2 and "no account named 'nobody'" in run.stderr
        # A token Dovecot's introspection calls inactive: refused, in one line, and the
        # POP3 SASL exchange ends (the "+" challenge answered) instead of hanging.
        bogus = Credential(token="not-a-valid-token-0123")
        for module, name in ((pull_imap, "shared-imap"), (pull_pop3, "shared-pop")):
            with pytest.raises(PullError) as refused:
                module.connect(d.config().get_mailbox(name), bogus)
            text = str(refused.value)
            assert "not-a-valid-token" not in text and "\n" not in text
            assert f"127.0.0.1:{dovecot.imap_port if module is pull_imap else dovecot.port}" in text
        show = d.cli("mailbox", "show", "shared-imap", "--json")
        assert json.loads(show.stdout)["account"] == "shared"
        check_no_secrets(d, dovecot.log_text(), *(r.mpr_path.read_text() for r in reports))


async def test_the_service_pulls_an_oauth2_mailbox_on_its_schedule(
    deployment: Deployment, nursery: trio.Nursery
) -> None:
    d = deployment
    setup_accounts(d)
    with start_oauth_dovecot(d.oauth.introspection_url(), MAILBOXES) as dovecot:
        served = [dovecot.deliver("shared@example.test", _msg(n)) for n in range(2)]
        _add(d, "shared-pop", "pop3", dovecot.port, "shared")
        assert d.cli("mailbox", "set", "shared-pop", "--interval", "1m").returncode == 0
        await d.start(nursery)  # the schedule's first look is at start: the box is due
        reports = await wait_for_reports(d.reports_dir, 2, max_wait=60)
        assert sorted(r.eml for r in reports) == sorted(served)
        assert {r["protocol"] for r in reports} == {"pop3-pull"}
        status = await d.status()
        boxes = json.loads(status.stdout)["mailboxes"]
        assert boxes[0]["name"] == "shared-pop" and boxes[0]["failures_in_a_row"] == 0
        check_no_secrets(d, dovecot.log_text(), status.stdout)
