"""Commands that would let a client deliver unarchived mail or set its own provenance at
the provider never reach a real Postfix or aiosmtpd (issue 10 items 2 and 3).

`DATA\\x00` used to be relayed as an unknown verb: Postfix cuts the line at the NUL,
answers 354, and queued the lines that followed -- which mailtee relayed as "commands"
-- as a message nobody archived. mailtee now refuses command lines with control bytes
(like bare CR/LF), and a 354 to anything but the DATA it sent closes the provider
connection before anything more is relayed.

The check is on Postfix's own queue: after each attack a legitimate message goes through
the same proxy, and Postfix must hold exactly that one (the archived one).

BURL (the provider fetches the message from IMAP: bytes the proxy never sees), XCLIENT
and XFORWARD (the client sets the address/name/login the provider records) are removed
from EHLO and refused, against providers that offer them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.postfix import PostfixServer, start_postfix
from fixtures.smtp_clients import smtp_wire

pytestmark = pytest.mark.e2e

SMUGGLED = b"Subject: smuggled\r\n\r\nnot archived\r\n.\r\n"
HONEST = b"Subject: honest\r\n\r\narchived\r\n.\r\n"


@pytest.fixture(scope="module")
def shared_postfix() -> Iterator[PostfixServer]:
    """One Postfix for the module, holding mail; XCLIENT/XFORWARD allowed from loopback
    (so the provider really offers them, as a relay trusting the proxy would)."""
    trusted = {
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
    }
    with start_postfix(main_cf=trusted) as pf:
        yield pf


@pytest.fixture
def postfix(shared_postfix: PostfixServer) -> PostfixServer:
    shared_postfix.flush_queue()
    return shared_postfix


async def envelope(w) -> None:
    assert (await w.read_reply())[0] == 220
    assert (await w.command(b"EHLO client.test"))[0] == 250
    assert (await w.command(b"MAIL FROM:<a@example.org>"))[0] == 250
    assert (await w.command(b"RCPT TO:<b@example.net>"))[0] == 250


async def honest_message(port: int) -> None:
    async with smtp_wire(port) as w:
        await envelope(w)
        assert (await w.command(b"DATA"))[0] == 354
        await w.send(HONEST)
        assert (await w.read_reply())[0] == 250
        await w.command(b"QUIT")


async def held_after_an_honest_message(postfix, proxy, before: int) -> list[bytes]:
    # Postfix's 250 to the honest DATA means it is queued; anything smuggled came earlier.
    await honest_message(proxy.port("smtp"))
    await proxy.wait_reports(before + 1)
    return postfix.queued()


@pytest.mark.parametrize("verb", [b"DATA\x00", b"DATA\x00 x", b"DATA \x00", b"data\x7f"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["stepwise", "pipelined"])
async def test_data_with_control_bytes_is_refused_in_front_of_postfix(
    postfix, make_proxy, verb: bytes, pipelined: bool
) -> None:
    proxy = await make_proxy([{"name": "smtp", "target_port": postfix.port}])
    async with smtp_wire(proxy.port("smtp")) as w:
        await envelope(w)
        if pipelined:
            await w.send(verb + b"\r\n" + SMUGGLED + b"QUIT\r\n")
            code, _ = await w.read_reply()
        else:
            code, _ = await w.command(verb)
            if code == 354:
                await w.send(SMUGGLED)
            await w.command(b"QUIT")
        assert code == 500
        await w.read_until_eof()
    held = await held_after_an_honest_message(postfix, proxy, 0)
    assert len(held) == 1 and b"Subject: honest" in held[0]
    assert not any(b"smuggled" in m for m in held)
    (rep,) = proxy.reports()
    assert b"Subject: honest" in rep.eml


async def test_xclient_and_xforward_are_hidden_and_refused(postfix, make_proxy) -> None:
    async with smtp_wire(postfix.port) as direct:  # the provider does offer them
        await direct.read_reply()
        _, caps = await direct.command(b"EHLO client.test")
        assert b"XCLIENT" in caps and b"XFORWARD" in caps
    proxy = await make_proxy([{"name": "smtp", "target_port": postfix.port}])
    async with smtp_wire(proxy.port("smtp")) as w:
        assert (await w.read_reply())[0] == 220
        code, caps = await w.command(b"EHLO client.test")
        assert code == 250 and b"XCLIENT" not in caps and b"XFORWARD" not in caps
        assert await w.command(b"XCLIENT ADDR=203.0.113.9 NAME=spoofed.example") == (
            550,
            b"550 5.7.0 XCLIENT/XFORWARD not permitted\r\n",
        )
        assert (await w.command(b"XFORWARD ADDR=203.0.113.9"))[0] == 550
        assert (await w.command(b"MAIL FROM:<a@example.org>"))[0] == 250
        assert (await w.command(b"RCPT TO:<b@example.net>"))[0] == 250
        assert (await w.command(b"DATA"))[0] == 354
        await w.send(HONEST)
        assert (await w.read_reply())[0] == 250
    (held,) = postfix.queued()
    assert b"203.0.113.9" not in held and b"spoofed" not in held
    assert b"from client.test (localhost [127.0.0.1])" in held


async def test_burl_is_hidden_and_refused(smtp_upstream, make_proxy) -> None:
    up = smtp_upstream(extra_ehlo=["BURL imap"])
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    async with smtp_wire(proxy.port("smtp")) as w:
        assert (await w.read_reply())[0] == 220
        code, caps = await w.command(b"EHLO client.test")
        assert code == 250 and b"BURL" not in caps
        await envelope_after_ehlo(w)
        burl = b"BURL imap://a@imap.example.org/Sent;uidvalidity=1/;uid=7;urlauth=x LAST"
        assert await w.command(burl) == (502, b"502 5.5.1 BURL not supported\r\n")
        assert (await w.command(b"QUIT"))[0] == 221
    assert up.messages == []


async def envelope_after_ehlo(w) -> None:
    assert (await w.command(b"MAIL FROM:<a@example.org>"))[0] == 250
    assert (await w.command(b"RCPT TO:<b@example.net>"))[0] == 250
