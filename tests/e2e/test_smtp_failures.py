"""SMTP relay end to end: peers that fail halfway (real smtp-sink faults, dropped clients).

Not in the issue's list, but the same invariants: nothing reaches the provider that was
not archived, and a report never claims a delivery nobody confirmed.
"""

from __future__ import annotations

import pytest
import trio

from fixtures import mails
from fixtures.smtp_clients import smtp_wire, smtplib_session

pytestmark = pytest.mark.e2e


def listener(up, **fields):
    return {"name": "smtp", "target_port": up.port, **fields}


async def test_upstream_vanishes_after_final_dot(smtp_sink, make_proxy):
    """smtp-sink hangs up after "." without a reply: delivery status unknown."""
    sink = smtp_sink(disconnect=["."])
    proxy = await make_proxy([listener(sink)])
    mail = mails.plain()
    res = await smtplib_session(proxy.port(), [mail])
    code, text = res.transactions[0].data
    assert code == 451 and text.startswith(b"4.4.2"), res
    (rep,) = await proxy.wait_reports(1)
    assert rep.eml == mail.data
    assert rep["upstream"] == {"outcome": "unknown", "reply": None}


async def test_upstream_421_is_relayed(smtp_sink, make_proxy):
    sink = smtp_sink(quit_421=["RCPT"])
    proxy = await make_proxy([listener(sink)])
    res = await smtplib_session(proxy.port(), [mails.plain()])
    (tx,) = res.transactions
    assert [c for c, _ in tx.rcpts] == [421] and tx.data is None, res
    assert proxy.report_files() == []


async def test_message_over_the_size_limit(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)], max_message_size=2048)
    res = await smtplib_session(proxy.port(), [mails.long_lines()])  # 3 kB
    assert int(res.esmtp_features["size"]) <= 2048  # lowered from aiosmtpd's 32 MiB
    code, text = res.transactions[0].data
    assert code == 552 and text.startswith(b"5.3.4"), res
    await trio.sleep(0.2)
    assert up.transactions == []
    assert proxy.report_files() == []


async def test_client_disconnects_mid_data(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    async with smtp_wire(proxy.port()) as w:
        await w.read_reply()
        await w.command(b"EHLO leaver.example")
        await w.command(b"MAIL FROM:<alice@example.org>")
        await w.command(b"RCPT TO:<bob@example.net>")
        assert (await w.command(b"DATA"))[0] == 354
        await w.send(b"Subject: half a message\r\n\r\nand then the client is gone\r\n")
        await trio.sleep(0.2)
    with trio.move_on_after(3):
        while up.disconnections < up.connections:  # noqa: ASYNC110 - aiosmtpd thread state
            await trio.sleep(0.01)
    assert up.disconnections == up.connections == 1  # the proxy hung up upstream too
    assert up.transactions == []
    assert proxy.report_files() == []  # no half message, no temp file left behind
