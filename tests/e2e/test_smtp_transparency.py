"""SMTP relay end to end: real clients -> mailtee -> real upstreams, byte for byte.

Issue 3 acceptance: transparency (the bytes the upstream receives == the `.eml` == what
the client sent) for 8-bit, SMTPUTF8, ISO-2022-JP, dot lines, 20 MB and several
transactions per session; the `.mpr` envelope and upstream verdict; upstream rejections
reach the client verbatim; clients smtplib, swaks and msmtp; upstreams aiosmtpd
(STARTTLS + AUTH) and Postfix smtp-sink.
"""

from __future__ import annotations

import hashlib

import pytest

from fixtures import mails
from fixtures.smtp_clients import (
    msmtp,
    require_swaks_tls,
    smtp_wire,
    smtplib_session,
    swaks,
    swaks_sent_data,
)

pytestmark = pytest.mark.e2e

RELAY_USER = "relay-user"
RELAY_PASSWORD = "Relay-Pa55-kX9#q"


def listener(up, **fields):
    """A listener dict for make_proxy relaying to `up` (aiosmtpd or smtp-sink)."""
    return {"name": "smtp", "target_port": up.port, **fields}


def reply_text(code_text: tuple[int, bytes]) -> str:
    code, text = code_text
    return f"{code} {text.decode()}"


def assert_report(rep, mail, up_tx, *, outcome="delivered"):
    """The `.mpr` + `.eml` pair matches what the client sent and the upstream answered."""
    assert rep.eml == mail.data
    assert rep["format"] == "mailtee-mpr" and rep["protocol"] == "smtp"
    assert rep["size"] == len(mail.data)
    assert rep["sha256"] == hashlib.sha256(mail.data).hexdigest()
    assert rep["smtp"]["mail_from"] == mail.sender
    assert rep["smtp"]["rcpt_to"] == mail.recipients
    assert rep["upstream"] == {"outcome": outcome, "reply": up_tx.reply}


# --- transparency --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(mails.TRANSPARENCY_MAILS))
async def test_smtplib_starttls_both_sides_byte_exact(name, smtp_upstream, make_proxy, ca_file):
    """aiosmtpd with STARTTLS + AUTH (credentials injected by the proxy), smtplib client."""
    up = smtp_upstream(tls="starttls", auth="required", user=RELAY_USER, password=RELAY_PASSWORD)
    proxy = await make_proxy(
        [
            listener(
                up,
                client_tls="starttls",
                target_tls="starttls",
                target_ca=str(ca_file),
                target_user=RELAY_USER,
            )
        ],
        passwords={"smtp": RELAY_PASSWORD},
    )
    mail = mails.TRANSPARENCY_MAILS[name]()
    res = await smtplib_session(proxy.port(), [mail], tls="starttls", ca_file=ca_file)
    assert res.error is None, res.error
    assert res.tls in ("TLSv1.2", "TLSv1.3")
    tx = res.transactions[0]
    assert tx.delivered, tx
    (up_tx,) = up.messages
    assert up_tx.content == mail.data  # upstream == client
    assert up_tx.mail_from == mail.sender and up_tx.rcpt_tos == mail.recipients
    assert up_tx.auth_login == RELAY_USER and up_tx.tls is not None
    assert reply_text(tx.data) == up_tx.reply  # the upstream's reply, verbatim
    (rep,) = await proxy.wait_reports(1)
    assert_report(rep, mail, up_tx)  # .eml == client == upstream
    assert rep["client"]["tls"] == res.tls
    assert rep["target"]["tls"] == up_tx.tls


async def test_two_transactions_in_one_session(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    sent = [mails.plain(1), mails.dot_lines(), mails.plain(2, to="carol@example.net")]
    res = await smtplib_session(proxy.port(), sent)
    assert [t.delivered for t in res.transactions] == [True, True, True], res
    assert [t.content for t in up.messages] == [m.data for m in sent]
    reports = await proxy.wait_reports(3)
    assert len(reports) == 3
    by_content = {r.eml: r for r in reports}
    for mail, up_tx in zip(sent, up.messages, strict=True):
        assert_report(by_content[mail.data], mail, up_tx)


async def test_20mb_attachment(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    mail = mails.big_attachment()
    assert len(mail.data) > 20_000_000
    res = await smtplib_session(proxy.port(), [mail], timeout=60.0)
    assert res.transactions[0].delivered, res
    (up_tx,) = up.messages
    digest = hashlib.sha256(mail.data).hexdigest()
    # compare digests first: a 20 MB assertion diff helps nobody
    assert hashlib.sha256(up_tx.content).hexdigest() == digest
    (rep,) = await proxy.wait_reports(1)
    assert hashlib.sha256(rep.eml).hexdigest() == digest
    assert rep["sha256"] == digest and rep["size"] == len(mail.data)


async def test_report_lists_every_recipient_bcc_included(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    data = (
        b"From: alice@example.org\r\nTo: bob@example.net\r\nCc: carol@example.net\r\n"
        b"Subject: with a blind copy\r\n\r\nDave is on BCC.\r\n"
    )
    rcpts = ["bob@example.net", "carol@example.net", "dave@example.com"]
    mail = mails.Mail("alice@example.org", rcpts, data)
    res = await smtplib_session(proxy.port(), [mail])
    assert res.transactions[0].delivered
    (up_tx,) = up.messages
    assert up_tx.rcpt_tos == rcpts
    (rep,) = await proxy.wait_reports(1)
    assert_report(rep, mail, up_tx)
    assert rep["upstream"]["reply"].startswith("250 2.0.0 Ok: queued as UP")
    assert b"dave" not in rep.eml  # the BCC is in the envelope only


async def test_pipelined_groups_over_the_wire(smtp_upstream, make_proxy):
    """RFC 2920: MAIL/RCPT/DATA in one write; end of data + the next group in one write."""
    up = smtp_upstream(reject_rcpt={"nobody@example.net": "550 5.1.1 no such user"})
    proxy = await make_proxy([listener(up)])
    first, second = mails.plain(1), mails.dot_lines()
    async with smtp_wire(proxy.port()) as w:
        assert (await w.read_reply())[0] == 220
        code, ehlo = await w.command(b"EHLO pipeliner.example")
        assert code == 250 and b"PIPELINING" in ehlo
        await w.send(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
            b"RCPT TO:<nobody@example.net>\r\nDATA\r\n"
        )
        replies = [await w.read_reply() for _ in range(4)]
        assert [r[1] for r in replies] == [
            b"250 2.1.0 Ok\r\n",
            b"250 2.1.5 Ok\r\n",
            b"550 5.1.1 no such user\r\n",
            b"354 End data with <CR><LF>.<CR><LF>\r\n",
        ]
        await w.send(
            mails.wire_data(first.data)
            + b"RSET\r\nMAIL FROM:<dots@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"
        )
        replies = [await w.read_reply() for _ in range(5)]
        assert [r[0] for r in replies] == [250, 250, 250, 250, 354], replies
        await w.send(mails.wire_data(second.data) + b"QUIT\r\n")
        assert (await w.read_reply())[0] == 250
        assert (await w.read_reply())[0] == 221
    assert [t.content for t in up.messages] == [first.data, second.data]
    assert up.messages[0].rcpt_tos == ["bob@example.net"]
    reports = await proxy.wait_reports(2)
    assert sorted(r.eml for r in reports) == sorted([first.data, second.data])


# --- upstream rejections reach the client verbatim -----------------------------------


async def test_upstream_rejects_rcpt(smtp_upstream, make_proxy):
    up = smtp_upstream(reject_rcpt={"nobody@example.net": "550 5.1.1 no such user"})
    proxy = await make_proxy([listener(up)])
    mixed = mails.with_recipients(mails.plain(1), ["nobody@example.net", "bob@example.net"])
    only_bad = mails.with_recipients(mails.plain(2), ["nobody@example.net"])
    res = await smtplib_session(proxy.port(), [mixed, only_bad])
    first, second = res.transactions
    assert first.rcpts == [(550, b"5.1.1 no such user"), (250, b"2.1.5 Ok")]
    assert first.delivered
    assert second.rcpts == [(550, b"5.1.1 no such user")] and second.data is None
    (up_tx,) = up.messages
    assert up_tx.rcpt_tos == ["bob@example.net"]
    (rep,) = await proxy.wait_reports(1)  # only the message that was sent
    assert rep.eml == mixed.data
    assert rep["smtp"]["rcpt_to"] == ["bob@example.net"]  # the recipients that were accepted


async def test_upstream_rejects_after_data(smtp_upstream, make_proxy):
    up = smtp_upstream(reject_data="550 5.7.1 spam")
    proxy = await make_proxy([listener(up)])
    mail = mails.utf8_8bit()
    res = await smtplib_session(proxy.port(), [mail])
    assert res.transactions[0].data == (550, b"5.7.1 spam")
    (up_tx,) = up.transactions
    assert up_tx.content == mail.data and not up_tx.accepted
    (rep,) = await proxy.wait_reports(1)
    assert_report(rep, mail, up_tx, outcome="rejected")
    assert rep["upstream"]["reply"] == "550 5.7.1 spam"


# --- Postfix smtp-sink upstream ------------------------------------------------------


async def test_smtp_sink_upstream_byte_exact(smtp_sink, make_proxy):
    sink = smtp_sink()
    proxy = await make_proxy([listener(sink)])
    sent = [mails.dot_lines(), mails.utf8_8bit(), mails.long_lines(), mails.iso2022jp()]
    res = await smtplib_session(proxy.port(), sent)
    assert [t.data for t in res.transactions] == [(250, b"2.0.0 Ok")] * len(sent), res
    got = {m.data: m for m in sink.messages()}  # dump order is not reliable
    assert sorted(got) == sorted(m.data for m in sent)
    for mail in sent:
        assert got[mail.data].mail_from == mail.sender
        assert got[mail.data].rcpt_tos == mail.recipients
    reports = await proxy.wait_reports(len(sent))
    assert sorted(r.eml for r in reports) == sorted(m.data for m in sent)
    assert {r["upstream"]["reply"] for r in reports} == {"250 2.0.0 Ok"}


async def test_smtp_sink_rejects_rcpt_and_data(smtp_sink, make_proxy):
    sink = smtp_sink(hard_reject=["RCPT"], hard_reply="550 5.1.1 sink: no such user")
    proxy = await make_proxy([listener(sink)])
    res = await smtplib_session(proxy.port(), [mails.plain()])
    assert res.transactions[0].rcpts == [(550, b"5.1.1 sink: no such user")]

    sink2 = smtp_sink(hard_reject=["."], hard_reply="554 5.7.1 sink: content rejected")
    proxy2 = await make_proxy([listener(sink2)])
    mail = mails.plain()
    res2 = await smtplib_session(proxy2.port(), [mail])
    assert res2.transactions[0].data == (554, b"5.7.1 sink: content rejected")
    (rep,) = await proxy2.wait_reports(1)
    assert rep.eml == mail.data
    assert rep["upstream"] == {"outcome": "rejected", "reply": "554 5.7.1 sink: content rejected"}


# --- swaks ---------------------------------------------------------------------------


async def test_swaks_tls_auth_attachment_pipelining(smtp_upstream, make_proxy, ca_file, tmp_path):
    """Client AUTH is relayed (no injected credentials) and recorded as smtp.auth_user."""
    require_swaks_tls()
    up = smtp_upstream(tls="starttls", auth="required", user="swaks-user", password="sw-pw-1")
    proxy = await make_proxy(
        [listener(up, client_tls="starttls", target_tls="starttls", target_ca=str(ca_file))]
    )
    att = tmp_path / "Rechnung 2026.pdf"
    att.write_bytes(b"%PDF-1.7\n" + mails.attachment_bytes(300_000))
    res = await swaks(
        proxy.port(),
        "--from", "swaks-user@example.org",
        "--to", "bob@example.net,carol@example.net",
        "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
        "--auth", "PLAIN", "--auth-user", "swaks-user", "--auth-password", "sw-pw-1",
        "--attach", f"@{att}",
        "--pipeline",
    )  # fmt: skip
    assert res.returncode == 0, res.text()
    assert b"PIPELINING" in res.stdout
    # swaks really pipelined: DATA went out before the reply to MAIL came back
    assert res.stdout.index(b" ~> DATA") < res.stdout.index(b"<~  250 2.1.0")
    sent = swaks_sent_data(res.stdout)
    assert b"Rechnung 2026.pdf" in sent
    (up_tx,) = up.messages
    assert up_tx.content == sent
    assert up_tx.auth_login == "swaks-user"
    (rep,) = await proxy.wait_reports(1)
    assert rep.eml == sent
    assert rep["smtp"]["auth_user"] == "swaks-user"
    assert rep["smtp"]["rcpt_to"] == ["bob@example.net", "carol@example.net"]
    assert rep["upstream"] == {"outcome": "delivered", "reply": up_tx.reply}


async def test_swaks_implicit_tls_to_smtp_sink(smtp_sink, make_proxy, ca_file, tmp_path):
    require_swaks_tls()
    sink = smtp_sink()
    proxy = await make_proxy([listener(sink, client_tls="implicit")])
    body = tmp_path / "mail.eml"
    body.write_bytes(mails.dot_lines().data)
    res = await swaks(
        proxy.port(),
        "--tlsc", "--tls-verify", "--tls-ca-path", str(ca_file),
        "--from", "dots@example.org", "--to", "bob@example.net",
        "--data", f"@{body}", "--no-data-fixup",
    )  # fmt: skip
    assert res.returncode == 0, res.text()
    sent = swaks_sent_data(res.stdout)
    (got,) = sink.messages()
    assert got.data == sent
    (rep,) = await proxy.wait_reports(1)
    assert rep.eml == sent
    assert rep["client"]["tls"] in ("TLSv1.2", "TLSv1.3")


# --- msmtp ---------------------------------------------------------------------------


@pytest.mark.parametrize("client_tls", ["starttls", "implicit"])
async def test_msmtp_with_injected_credentials(
    client_tls, smtp_upstream, make_proxy, ca_file, tmp_path
):
    up = smtp_upstream(tls="starttls", auth="required", user=RELAY_USER, password=RELAY_PASSWORD)
    proxy = await make_proxy(
        [
            listener(
                up,
                client_tls=client_tls,
                target_tls="starttls",
                target_ca=str(ca_file),
                target_user=RELAY_USER,
            )
        ],
        passwords={"smtp": RELAY_PASSWORD},
    )
    mail = mails.shift_jis()
    res = await msmtp(proxy.port(), mail, workdir=tmp_path, tls=client_tls, ca_file=ca_file)
    assert res.returncode == 0, res.text()
    (up_tx,) = up.messages
    assert up_tx.content == mail.data
    assert up_tx.auth_login == RELAY_USER
    (rep,) = await proxy.wait_reports(1)
    assert_report(rep, mail, up_tx)
