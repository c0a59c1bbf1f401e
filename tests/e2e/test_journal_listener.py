"""Issue 15 acceptance: the smtp-journal listener, fed by swaks and by a real Postfix.

An Exchange envelope journal report (X-MS-Journal-Report; the envelope part lists the
sender, To, Cc, a Bcc recipient and the members of an expanded distribution list; the
original attached as message/rfc822) is unwrapped: the `.eml` is the original's exact
bytes, the report's recipients are the envelope recipients, and after ingest the Bcc
recipient owns the message and finds it with `search --user`. Plain journal mail is
archived as received. Also: allow_clients, AUTH with a local password, STARTTLS, and a
copy that cannot be written gets 451 (the sender keeps the message).
"""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from admin.cli import app
from archive.logins import set_password
from archive.store import Archive
from archive.users import UserSpec, upsert_user
from fixtures.postfix import start_postfix
from fixtures.pull import immutable as _immutable
from fixtures.smtp_clients import require_swaks_tls, swaks, swaks_sent_data

pytestmark = pytest.mark.e2e

ORIGINAL = (
    b"From: Alice Sender <alice@corp.example>\r\n"
    b"To: Team <team@corp.example>\r\n"
    b"Cc: carl@corp.example\r\n"
    b"Subject: Quarterly figures\r\n"
    b"Date: Thu, 26 Nov 2026 10:15:00 +0900\r\n"
    b"Message-ID: <q3.figures@corp.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + "売上の数字です。\r\n".encode() + b"Regards\r\n"
)


def journal_report(original: bytes = ORIGINAL, *, b64: bool = False) -> bytes:
    """An Exchange envelope journal report (the shape Exchange Online sends)."""
    envelope = (
        b"Sender: alice@corp.example\r\n"
        b"Subject: Quarterly figures\r\n"
        b"Message-Id: <q3.figures@corp.example>\r\n"
        b"To: dan@corp.example, Expanded: team@corp.example\r\n"
        b"To: erin@corp.example, Expanded: team@corp.example\r\n"
        b"Cc: carl@corp.example\r\n"
        b"Bcc: bea@corp.example\r\n"
    )
    if b64:
        attached = b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(
            original
        ).replace(b"\n", b"\r\n")
    else:
        attached = b"\r\n" + original
    return (
        b"From: Microsoft Exchange Journaling <journal@corp.example>\r\n"
        b"To: journal@archive.corp.example\r\n"
        b"Subject: Quarterly figures\r\n"
        b"X-MS-Journal-Report:\r\n"
        b"Message-ID: <journal.1@corp.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="jr-boundary-42"\r\n'
        b"\r\n"
        b"--jr-boundary-42\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n" + envelope + b"\r\n"
        b"--jr-boundary-42\r\n"
        b"Content-Type: message/rfc822\r\n" + attached + b"\r\n"
        b"--jr-boundary-42--\r\n"
    )


JOURNAL_RCPTS = {
    "dan@corp.example",
    "erin@corp.example",
    "team@corp.example",
    "carl@corp.example",
    "bea@corp.example",
}


def _journal(**extra: object) -> dict[str, object]:
    return {"name": "journal", "protocol": "smtp-journal", "target_host": "", **extra}


def _ingest_and_search(state_dir: Path, user: str, address: str) -> list[str]:
    with Archive(state_dir) as a:
        upsert_user(a.catalog, UserSpec(user, [address]), "manual")
        a.ingest_pending(state_dir / "reports")
        return [h.subject for h in a.search("", user=user)]


async def test_exchange_report_by_swaks_is_unwrapped_and_bcc_owns_it(make_proxy, tmp_path) -> None:
    proxy = await make_proxy([_journal()])
    msg = tmp_path / "report.eml"
    msg.write_bytes(journal_report())
    r = await swaks(
        proxy.port("journal"), "--from", "journal@corp.example",
        "--to", "journal@archive.corp.example", "--data", f"@{msg}",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert b"250 2.0.0 Ok: archived" in r.stdout
    (report,) = await proxy.wait_reports(1)
    assert report["protocol"] == "smtp-journal" and report["direction"] == "journal"
    assert set(report["smtp"]["rcpt_to"]) == JOURNAL_RCPTS
    assert report["smtp"]["mail_from"] == "alice@corp.example"
    assert report["journal"]["format"] == "exchange"
    assert report["journal"]["envelope_rcpt_to"] == ["journal@archive.corp.example"]
    eml = next(proxy.reports_dir.glob("*.eml")).read_bytes()
    assert eml == ORIGINAL  # the attached original, byte for byte
    subjects = await trio.to_thread.run_sync(
        _ingest_and_search, proxy.state_dir, "bea", "bea@corp.example"
    )
    assert subjects == ["Quarterly figures"]
    # and through the command line, as an operator would look
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'state_dir = "{proxy.state_dir}"\n')
    r = CliRunner().invoke(app, ["--config", str(config), "search", "", "--user", "bea", "--json"])
    assert r.exit_code == 0, r.output
    assert [h["subject"] for h in json.loads(r.stdout)["hits"]] == ["Quarterly figures"]
    r = CliRunner().invoke(app, ["--config", str(config), "search", "", "--user", "carl", "--json"])
    assert r.exit_code == 1  # carl is no archive user: one clear error


async def test_plain_journal_mail_is_archived_as_received(make_proxy, tmp_path) -> None:
    proxy = await make_proxy([_journal()])
    msg = tmp_path / "plain.eml"
    msg.write_bytes(ORIGINAL)
    r = await swaks(proxy.port("journal"), "--from", "alice@corp.example",
                    "--to", "bea@corp.example", "--data", f"@{msg}")  # fmt: skip
    assert r.returncode == 0, r.stdout
    (report,) = await proxy.wait_reports(1)
    assert report["journal"]["format"] == "plain"
    assert report["smtp"]["rcpt_to"] == ["bea@corp.example"]
    # exactly what swaks sent (it ends the data with an empty line of its own)
    assert next(proxy.reports_dir.glob("*.eml")).read_bytes() == swaks_sent_data(r.stdout)


async def test_exchange_report_relayed_by_real_postfix(make_proxy, tmp_path) -> None:
    proxy = await make_proxy([_journal()])
    msg = tmp_path / "report.eml"
    msg.write_bytes(journal_report(b64=True))
    with start_postfix(relay_to=("127.0.0.1", proxy.port("journal"))) as postfix:
        r = await swaks(postfix.port, "--from", "journal@corp.example",
                        "--to", "journal@archive.corp.example", "--data", f"@{msg}")  # fmt: skip
        assert r.returncode == 0, r.stdout
        (report,) = await proxy.wait_reports(1, max_wait=60)
    assert set(report["smtp"]["rcpt_to"]) == JOURNAL_RCPTS
    eml = next(proxy.reports_dir.glob("*.eml")).read_bytes()
    assert eml == ORIGINAL
    subjects = await trio.to_thread.run_sync(
        _ingest_and_search, proxy.state_dir, "bea", "bea@corp.example"
    )
    assert subjects == ["Quarterly figures"]


async def test_journal_refuses_clients_outside_allow_clients(make_proxy) -> None:
    proxy = await make_proxy([_journal()], allow_clients=["192.0.2.0/24"])
    r = await swaks(proxy.port("journal"), "--from", "a@x.example", "--to", "b@y.example")
    assert b"554 5.7.1" in r.stdout
    assert proxy.reports() == []


async def test_journal_auth_with_local_password_and_starttls(make_proxy, ca_file) -> None:
    require_swaks_tls()
    proxy = await make_proxy([_journal(local_login=True, client_tls="starttls")])

    def setup() -> None:
        with Archive(proxy.state_dir) as a:
            upsert_user(a.catalog, UserSpec("exchange", ["journal@corp.example"]), "manual")
            set_password(a.catalog, "exchange", "J0urnal-Pass!")

    await trio.to_thread.run_sync(setup)
    port = proxy.port("journal")
    common = ("--from", "journal@corp.example", "--to", "journal@archive.example")
    no_auth = await swaks(port, *common, "--tls")
    assert b"530 5.7.0 Authentication required" in no_auth.stdout
    wrong = await swaks(port, *common, "--tls", "--auth", "PLAIN", "--auth-user", "exchange",
                        "--auth-password", "wrong")  # fmt: skip
    assert b"535 5.7.8" in wrong.stdout
    ok = await swaks(port, *common, "--tls", "--auth", "LOGIN", "--auth-user", "exchange",
                     "--auth-password", "J0urnal-Pass!")  # fmt: skip
    assert ok.returncode == 0, ok.stdout
    (report,) = await proxy.wait_reports(1)
    assert report["smtp"]["auth_user"] == "exchange"
    assert report["client"]["tls"].startswith("TLSv1.")
    assert "J0urnal-Pass!" not in str(report)

    def plaintext_auth() -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo("x")
            assert "auth" not in s.esmtp_features  # AUTH only after STARTTLS
            code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0exchange\0x").decode())
            s.starttls(context=ssl.create_default_context(cafile=str(ca_file)))
            return str(code)

    assert await trio.to_thread.run_sync(plaintext_auth) == "538"


async def test_journal_unwritable_copy_gets_451(make_proxy, tmp_path) -> None:
    proxy = await make_proxy([_journal()])
    _immutable(proxy.reports_dir, True)
    try:
        r = await swaks(proxy.port("journal"), "--from", "a@corp.example",
                        "--to", "b@corp.example")  # fmt: skip
    finally:
        _immutable(proxy.reports_dir, False)
    assert b"451 4.3.0" in r.stdout
    assert list(proxy.reports_dir.iterdir()) == []
