"""The e2e SMTP fixtures against each other, without the proxy.

If one of these fails, the relay tests that use the same fixture prove nothing: the
clients must deliver byte-exact mail straight to the upstreams first.
"""

from __future__ import annotations

import pytest

from fixtures import mails
from fixtures.smtp_clients import (
    client_context,
    msmtp,
    require_swaks_tls,
    smtp_wire,
    smtplib_session,
    swaks,
    swaks_sent_data,
)
from fixtures.smtp_upstream import INJECTED_REPLY, hostile_starttls_upstream

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", sorted(mails.TRANSPARENCY_MAILS))
async def test_smtplib_to_aiosmtpd_is_byte_exact(smtp_upstream, name):
    up = smtp_upstream()
    mail = mails.TRANSPARENCY_MAILS[name]()
    res = await smtplib_session(up.port, [mail])
    assert res.error is None
    assert res.transactions[0].delivered, res.transactions[0]
    assert up.messages[0].content == mail.data
    assert up.messages[0].mail_from == mail.sender
    assert up.messages[0].rcpt_tos == mail.recipients


async def test_aiosmtpd_starttls_auth_and_rejections(smtp_upstream, ca_file):
    up = smtp_upstream(
        tls="starttls",
        auth="required",
        user="carol",
        password="pw",
        reject_rcpt={"nobody@example.net": "550 5.1.1 no such user"},
    )
    mail = mails.with_recipients(mails.plain(), ["bob@example.net", "nobody@example.net"])
    res = await smtplib_session(
        up.port, [mail], tls="starttls", ca_file=ca_file, login=("carol", "pw")
    )
    assert res.error is None and res.tls in ("TLSv1.2", "TLSv1.3")
    tx = res.transactions[0]
    assert tx.rcpts[1] == (550, b"5.1.1 no such user")
    assert tx.delivered
    (t,) = up.messages
    assert (t.auth_login, t.rcpt_tos, t.tls) == ("carol", ["bob@example.net"], res.tls)

    refused = await smtplib_session(up.port, [mail], tls="starttls", ca_file=ca_file)
    assert refused.transactions[0].mail[0] == 530


async def test_aiosmtpd_implicit_tls_and_reject_data(smtp_upstream, ca_file):
    up = smtp_upstream(tls="implicit", reject_data="550 5.7.1 spam")
    res = await smtplib_session(up.port, [mails.plain()], tls="implicit", ca_file=ca_file)
    assert res.transactions[0].data == (550, b"5.7.1 spam")
    assert up.transactions[0].tls is not None and not up.messages


async def test_smtp_sink_roundtrip(smtp_sink):
    sink = smtp_sink()
    mail = mails.dot_lines()
    res = await smtplib_session(sink.port, [mail, mails.utf8_8bit()])
    assert [t.delivered for t in res.transactions] == [True, True]
    got = {m.data: m for m in sink.messages()}
    assert sorted(got) == sorted([mail.data, mails.utf8_8bit().data])
    assert got[mail.data].mail_from == mail.sender
    assert got[mail.data].rcpt_tos == mail.recipients


async def test_smtp_sink_hard_reject(smtp_sink):
    sink = smtp_sink(hard_reject=["RCPT"], hard_reply="550 5.1.1 sink says no")
    res = await smtplib_session(sink.port, [mails.plain()])
    assert res.transactions[0].rcpts == [(550, b"5.1.1 sink says no")]
    assert sink.messages() == []


async def test_swaks_tls_auth_attachment_pipeline(smtp_upstream, ca_file, tmp_path):
    require_swaks_tls()
    up = smtp_upstream(tls="starttls", auth="required", user="dave", password="pw")
    att = tmp_path / "report.bin"
    att.write_bytes(mails.attachment_bytes(50_000))
    res = await swaks(
        up.port,
        "--from", "dave@example.org",
        "--to", "bob@example.net,carol@example.net",
        "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
        "--auth", "PLAIN", "--auth-user", "dave", "--auth-password", "pw",
        "--attach", f"@{att}",
        "--pipeline",
    )  # fmt: skip
    assert res.returncode == 0, res.text()
    (t,) = up.messages
    assert t.auth_login == "dave" and t.tls is not None
    assert t.content == swaks_sent_data(res.stdout)
    assert t.rcpt_tos == ["bob@example.net", "carol@example.net"]


async def test_msmtp_starttls_auth(smtp_upstream, ca_file, tmp_path):
    up = smtp_upstream(tls="starttls", auth="required", user="erin", password="pw")
    mail = mails.utf8_8bit()
    res = await msmtp(
        up.port, mail, workdir=tmp_path, tls="starttls", ca_file=ca_file, user="erin", password="pw"
    )
    assert res.returncode == 0, res.text()
    assert up.messages[0].content == mail.data
    assert up.messages[0].auth_login == "erin"


async def test_hostile_upstream_injects(upstream_cert, ca_file):
    async with hostile_starttls_upstream(upstream_cert) as up, smtp_wire(up.port) as w:
        assert (await w.read_reply())[0] == 220
        assert (await w.command(b"EHLO x"))[0] == 250
        await w.send(b"STARTTLS\r\n")
        assert (await w.read_reply())[0] == 220
        # the injected line is there, in plaintext, before any TLS byte
        assert await w.read_reply() == (250, INJECTED_REPLY)
        await w.starttls(client_context(ca_file))
        assert (await w.command(b"EHLO x"))[0] == 250
        assert up.tls_handshakes == 1


async def test_wire_client_sees_eof(smtp_upstream):
    up = smtp_upstream()
    async with smtp_wire(up.port) as w:
        await w.read_reply()
        await w.send(b"QUIT\r\n")
        rest, closed = await w.read_until_eof(5)
        assert closed and rest.startswith(b"221")
    assert up.connections == 1
