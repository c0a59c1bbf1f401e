"""Clients that abuse the proxy: idle, slowloris, floods, oversized mail, CRLF tricks, old TLS.

Timeout cases run on the autojump clock against the in-loop fake provider (no real
waiting). The service must stay up and serve the next honest client in every case.
"""

from __future__ import annotations

import math
import ssl
import tracemalloc

import pytest
import trio
from fakes import fake_smtp
from test_upstream_faults import allow_old_tls, send_mail

from fixtures import mails
from fixtures.smtp_clients import client_context, smtp_wire

MAIL = mails.plain()
MiB = 1024 * 1024


def listener(up, **fields):
    return {"name": "smtp", "target_port": up.port, **fields}


# --- timeouts (virtual time) ---------------------------------------------------------


async def test_idle_client_is_closed(make_proxy, autojump_clock):
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)], idle_timeout=30)
        async with smtp_wire(proxy.port()) as w:
            assert (await w.read_reply(math.inf))[0] == 220
            rest, closed = await w.read_until_eof(math.inf)
        assert closed and rest.startswith(b"421 4.4.2") and b"Idle timeout" in rest, rest
        assert up.commands == []


async def test_slowloris_command_is_cut_off(make_proxy, autojump_clock):
    """One byte every 20 s, idle_timeout 30 s: every byte is 'in time', the line never is."""
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)], idle_timeout=30)
        async with smtp_wire(proxy.port()) as w:
            assert (await w.read_reply(math.inf))[0] == 220
            sent = 0
            try:
                for b in b"EHLO slowloris.example\r\n":
                    await w.send(bytes([b]))
                    sent += 1
                    await trio.sleep(20)
            except trio.BrokenResourceError:
                pass
            rest, closed = await w.read_until_eof(math.inf)
        assert closed and rest.startswith(b"421 4.4.2"), rest
        assert sent < 5  # cut off after about one idle_timeout, not after the line
        assert up.commands == []
        # the service still serves an honest client (real time from here on is fine)
        assert (await send_mail(proxy.port(), max_wait=math.inf))[-1][0] == 250


async def test_slowloris_data_is_cut_off(make_proxy, autojump_clock):
    """DATA dribbled one byte every 20 s: no copy, nothing delivered, session ended."""
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)], idle_timeout=30)
        async with smtp_wire(proxy.port()) as w:
            await w.read_reply(math.inf)
            for cmd in (b"EHLO c.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@x.test>"):
                assert (await w.command(cmd, math.inf))[0] == 250
            assert (await w.command(b"DATA", math.inf))[0] == 354
            sent = 0
            try:
                for b in mails.wire_data(MAIL.data)[:200]:
                    await w.send(bytes([b]))
                    sent += 1
                    await trio.sleep(20)
            except trio.BrokenResourceError:
                pass
            rest, closed = await w.read_until_eof(math.inf)
        assert closed and rest.startswith(b"421 4.4.2"), rest
        assert sent < 200
        assert up.messages == []
        assert proxy.report_files() == []


async def test_data_slowloris_inside_the_idle_timeout_is_cut_off(make_proxy, autojump_clock):
    """10 bytes every 4 s under a 5 s idle timeout (issue 10 item 4): every chunk is
    progress, so only min_data_rate (default 256 B/s over 60 s) ends it; nothing leaves."""
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)], idle_timeout=5)
        data = b"Subject: slow\r\n\r\n" + b"".join(
            b"%07d slow line of a long message\r\n" % i for i in range(300)
        )
        async with smtp_wire(proxy.port()) as w:
            await w.read_reply(math.inf)
            for cmd in (b"EHLO c.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@x.test>"):
                assert (await w.command(cmd, math.inf))[0] == 250
            assert (await w.command(b"DATA", math.inf))[0] == 354
            sent = 0
            try:
                while sent < len(data):
                    await w.send(data[sent : sent + 10])
                    sent += 10
                    await trio.sleep(4)
                await w.send(b".\r\n")
            except trio.BrokenResourceError:
                pass
            rest, closed = await w.read_until_eof(math.inf)
        assert closed and rest.startswith(b"421 4.4.2"), rest
        assert sent < len(data)
        assert up.messages == []
        assert proxy.report_files() == []


async def test_session_time_cap_ends_a_slow_but_steady_session(make_proxy, autojump_clock):
    """NOOP every 4 s never idles out; max_session_time ends it (and frees the slot)."""
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)], idle_timeout=5, max_session_time=600)
        async with smtp_wire(proxy.port()) as w:
            await w.read_reply(math.inf)
            replies = 0
            while (reply := await w.command(b"NOOP", math.inf)) is not None:
                assert reply[0] in (250, 421)
                if reply[0] == 421:
                    break
                replies += 1
                await trio.sleep(4)
        assert reply is None or reply[0] == 421
        assert replies < 1000


# --- floods and sizes (real time, real sockets) --------------------------------------


async def test_connection_flood_over_the_cap(make_proxy):
    cap, flood = 5, 25
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)], max_connections=cap)
        streams = []
        greetings = []
        try:
            for _ in range(flood):
                s = await trio.open_tcp_stream("127.0.0.1", proxy.port())
                streams.append(s)
                greetings.append(await s.receive_some(1000))
        finally:
            for s in streams:
                await trio.aclose_forcefully(s)
        ok = [g for g in greetings if g.startswith(b"220 ")]
        busy = [g for g in greetings if g.startswith(b"421 4.7.0")]
        assert len(ok) == cap and len(busy) == flood - cap, greetings
        with trio.move_on_after(5):  # sessions notice their clients left
            while proxy.service.active["smtp"]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        replies = await send_mail(proxy.port())
        assert replies[-1][0] == 250, replies
        (rep,) = await proxy.wait_reports(1)
        assert rep.eml == MAIL.data


async def test_50mb_message_over_a_10mb_limit(smtp_sink, make_proxy):
    """Rejected with 552; the proxy's memory does not grow with the message."""
    sink = smtp_sink()  # a separate process: its buffers are not ours
    proxy = await make_proxy([listener(sink)], max_message_size=10 * MiB)
    line = b"x" * 998 + b"\r\n"
    chunk = line * 64  # 64 000 bytes
    tracemalloc.start()
    try:
        async with smtp_wire(proxy.port()) as w:
            await w.read_reply()
            for cmd in (b"EHLO big.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@x.test>"):
                assert (await w.command(cmd))[0] == 250
            assert (await w.command(b"DATA"))[0] == 354
            sent = 0
            try:
                while sent < 50 * MiB:
                    await w.send(chunk)
                    sent += len(chunk)
                await w.send(b".\r\n")
            except trio.BrokenResourceError:
                pass
            reply = await w.read_reply(30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply is not None and reply[0] == 552 and b"5.3.4" in reply[1], reply
    assert sent >= 50 * MiB  # the proxy read it all (a polite end, not a reset)
    assert peak < 8 * MiB, peak  # vs 50 MiB sent: streamed, not buffered
    assert sink.messages() == []
    assert proxy.report_files() == []


# --- CRLF injection and TLS floor ----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "tail_reply"),
    [
        (b"MAIL FROM:<a@example.org>\rRCPT TO:<evil@x.test>", None),
        # A bare LF ends the refused line: the proxy resynchronises there (like its
        # "line too long" handling), so the tail is the client's next command and is
        # relayed as a clean CRLF line of its own. Proxy and provider agree on it.
        (b"MAIL FROM:<a@example.org>\nRCPT TO:<evil@x.test>", 250),
        (b"NOOP\n\rRCPT TO:<evil@x.test>", 500),  # two refused lines
    ],
)
async def test_crlf_injection_in_commands(line, tail_reply, make_proxy):
    """A bare CR or LF inside a command is refused, never relayed as it came."""
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up)])
        async with smtp_wire(proxy.port()) as w:
            await w.read_reply()
            assert (await w.command(b"EHLO c.test"))[0] == 250
            reply = await w.command(line)
            if tail_reply is not None:
                assert (await w.read_reply())[0] == tail_reply  # the tail's own reply
            assert (await w.command(b"NOOP"))[0] == 250  # the session goes on
        assert reply[0] == 500 and b"5.5.2" in reply[1], reply
        for cmd in up.commands:  # everything relayed is one clean CRLF line
            assert cmd.endswith(b"\r\n") and b"\r" not in cmd[:-2] and b"\n" not in cmd[:-2]
        assert not any(c.startswith((b"MAIL", b"NOOP\n")) for c in up.commands), up.commands
        relayed_tail = [c for c in up.commands if b"evil" in c]
        assert relayed_tail == ([b"RCPT TO:<evil@x.test>\r\n"] if tail_reply == 250 else [])


async def test_client_below_tls_1_2_is_refused(make_proxy, ca_file):
    async with fake_smtp() as up:
        proxy = await make_proxy([listener(up, client_tls="implicit")])
        old = allow_old_tls(client_context(ca_file))
        raw = await trio.open_tcp_stream("127.0.0.1", proxy.port())
        tls = trio.SSLStream(raw, old, server_hostname="127.0.0.1")
        try:
            with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
                await tls.do_handshake()
        finally:
            await trio.aclose_forcefully(tls)
        assert up.connections == 0  # the provider never heard of it
        async with smtp_wire(proxy.port(), tls=client_context(ca_file)) as w:
            assert (await w.read_reply())[0] == 220
            assert w.stream.version() in ("TLSv1.2", "TLSv1.3")
