"""`421 Too many commands` keeps the reply order (issue 10 item 8).

A client pipelining thousands of RCPTs past `max_commands` used to get the 421 ahead of
the RCPT replies still pending, then the close: replies lost and out of order (RFC 2920
section 3.1). Now every command relayed before the limit gets its provider reply, then
the 421, then the connection closes. Against aiosmtpd (PIPELINING).
"""

from __future__ import annotations

import pytest

from fixtures.smtp_clients import smtp_wire

pytestmark = pytest.mark.e2e

MAX_COMMANDS = 40
RCPTS = 300


async def test_421_comes_after_the_pending_rcpt_replies(smtp_upstream, make_proxy) -> None:
    up = smtp_upstream(pipelining=True)
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}], max_commands=MAX_COMMANDS)
    async with smtp_wire(proxy.port("smtp")) as w:
        assert (await w.read_reply())[0] == 220
        assert (await w.command(b"EHLO client.test"))[0] == 250
        batch = b"MAIL FROM:<a@example.org>\r\n" + b"".join(
            b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(RCPTS)
        )
        await w.send(batch)
        codes = []
        while (reply := await w.read_reply(max_wait=30)) is not None:
            codes.append(reply[0])
    relayed = MAX_COMMANDS - 1  # EHLO was the first command
    assert codes == [250] * relayed + [421]
    assert len(up.rcpt_attempts) == relayed - 1  # MAIL and the RCPTs, nothing after
