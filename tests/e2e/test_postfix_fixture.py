"""The private Postfix fixture on its own (no proxy): it accepts, holds and relays.

If these fail, every test that uses `fixtures.postfix` proves nothing.
"""

from __future__ import annotations

import smtplib

import pytest

from fixtures.postfix import start_postfix

pytestmark = pytest.mark.e2e

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: fixture\r\n\r\nhello postfix\r\n"


def _send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail("a@example.org", ["b@example.net"], MESSAGE)


def test_postfix_holds_what_it_accepts(postfix):
    assert postfix.queue_ids() == []
    _send(postfix.port)
    postfix.wait_logged(r"[0-9A-F]+: message-id=")
    (held,) = postfix.queued()
    assert b"Subject: fixture\n" in held and held.endswith(b"\nhello postfix\n")
    postfix.flush_queue()
    assert postfix.queue_ids() == []


async def test_postfix_relays_to_an_aiosmtpd_smarthost(smtp_upstream):
    up = smtp_upstream()
    with start_postfix(relay_to=("127.0.0.1", up.port), main_cf={"smtpd_banner": "pf ESMTP"}) as pf:
        with smtplib.SMTP(timeout=30) as s:
            assert s.connect("127.0.0.1", pf.port) == (220, b"pf ESMTP")
            s.sendmail("a@example.org", ["b@example.net"], MESSAGE)
        (tx,) = await up.wait_transactions(1, max_wait=60)
    assert tx.rcpt_tos == ["b@example.net"]
    assert tx.content.endswith(b"\r\n\r\nhello postfix\r\n")
