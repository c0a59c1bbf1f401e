"""The provider misbehaves: down, dying mid-DATA, 1 byte/s, garbage, oversized lines, TLS.

Every case: the client gets a clear 4xx (never a hang, never a 250 for mail the provider
did not take), nothing half-written stays in the report directory, and the service keeps
serving. Timeout cases run on the autojump clock against the in-loop fake provider.
"""

from __future__ import annotations

import datetime as dt
import math
import ssl
import warnings

import pytest
import trio
from fakes import fake_smtp

from fixtures import mails
from fixtures.net import free_port
from fixtures.smtp_clients import smtp_wire
from fixtures.smtp_upstream import server_context

MAIL = mails.plain()


async def send_mail(port: int, mail=MAIL, max_wait: float = 10_000.0) -> list[tuple[int, bytes]]:
    """One transaction over the raw wire; the replies seen (stops at the first 4xx/5xx)."""
    replies: list[tuple[int, bytes]] = []
    async with smtp_wire(port) as w:
        for step in (None, b"EHLO c.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@x.test>"):
            r = await (w.read_reply(max_wait) if step is None else w.command(step, max_wait))
            if r is None:
                return replies
            replies.append(r)
            if r[0] >= 400:
                return replies
        r = await w.command(b"DATA", max_wait)
        if r is None:
            return replies
        replies.append(r)
        if r[0] != 354:
            return replies
        try:
            await w.send(mails.wire_data(mail.data))
        except trio.BrokenResourceError:
            pass
        r = await w.read_reply(max_wait)
        if r is not None:
            replies.append(r)
            if r[0] == 250:
                await w.command(b"QUIT", max_wait)
    return replies


async def test_upstream_down_at_start_then_recovers(make_proxy):
    port = free_port()  # nothing listens here yet
    proxy = await make_proxy([{"name": "smtp", "target_port": port}])
    replies = await send_mail(proxy.port())
    assert replies[0][0] == 421 and b"4.4.1" in replies[0][1], replies
    assert proxy.report_files() == []
    async with fake_smtp(port) as up:  # the provider comes back
        replies = await send_mail(proxy.port())
        assert replies[-1][0] == 250, replies
        (rep,) = await proxy.wait_reports(1)
    assert rep.eml == MAIL.data and rep["upstream"]["outcome"] == "delivered"
    assert up.messages == [mails.wire_data(MAIL.data)[:-3]]


async def test_upstream_dies_mid_data(make_proxy):
    big = mails.multipart([("a.bin", "application/octet-stream", bytes(range(256)) * 2000)])
    async with fake_smtp(die_in_data=10_000) as up:
        proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
        replies = await send_mail(proxy.port(), big)
        code, text = replies[-1]
        assert code == 451 and b"4.4.2" in text and b"not sent" in text, replies
        assert up.messages == []
        assert proxy.report_files() == []  # the copy was dropped: nothing was sent


@pytest.mark.parametrize("greeting", [b"HTTP/1.1 400 Bad Request\r\n", b"\x16\x03\x01\x02\x00\r\n"])
async def test_upstream_garbage_greeting(greeting, make_proxy):
    async with fake_smtp(greeting=greeting) as up:
        proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
        replies = await send_mail(proxy.port())
    assert replies and 400 <= replies[-1][0] < 500, replies
    assert proxy.report_files() == []


async def test_upstream_oversized_line(make_proxy):
    async with fake_smtp(greeting=b"220 " + b"x" * 200_000 + b"\r\n") as up:
        proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
        async with smtp_wire(proxy.port()) as w:
            rest, closed = await w.read_until_eof()
    assert closed
    assert rest.startswith(b"421 ") and len(rest) < 1000, rest[:200]  # not relayed
    assert proxy.report_files() == []


async def test_upstream_slow_one_byte_per_second_delivers(make_proxy, autojump_clock):
    """1 byte/s replies (about 150 s of virtual time): slow but within the limits."""
    async with fake_smtp(dribble=1.0) as up:
        proxy = await make_proxy(
            [{"name": "smtp", "target_port": up.port}], upstream_timeout=60, idle_timeout=60
        )
        # no client deadline: the archive fsync runs in a thread the autojump clock
        # cannot see, and a deadline would be jumped to while it works
        replies = await send_mail(proxy.port(), max_wait=math.inf)
        assert replies[-1][0] == 250, replies
        (rep,) = await proxy.wait_reports(1, max_wait=math.inf)
    assert rep.eml == MAIL.data
    assert rep["upstream"]["outcome"] == "delivered"
    assert up.messages == [mails.wire_data(MAIL.data)[:-3]]


async def test_upstream_slower_than_its_timeout_is_cut_off(make_proxy, autojump_clock):
    """Each byte arrives inside upstream_timeout, but the reply never completes in it."""
    async with fake_smtp(dribble=4.0) as up:
        proxy = await make_proxy(
            [{"name": "smtp", "target_port": up.port}], upstream_timeout=30, idle_timeout=30
        )
        async with smtp_wire(proxy.port()) as w:
            code, text = await w.read_reply(10_000)
            rest, closed = await w.read_until_eof(10_000)
    assert code == 421 and b"timed out" in text, text
    assert closed and rest == b""
    assert proxy.report_files() == []


def old_tls_server(cert) -> ssl.SSLContext:
    """A server that speaks at most TLS 1.1 (as far as this OpenSSL lets it)."""
    ctx = server_context(cert)
    return allow_old_tls(ctx)


def allow_old_tls(ctx: ssl.SSLContext) -> ssl.SSLContext:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as e:
        pytest.skip(f"this OpenSSL cannot be configured for TLS 1.1: {e}")
    return ctx


async def test_upstream_tls_handshake_failure(make_proxy):
    """target_tls=implicit, but the provider speaks plaintext SMTP."""
    async with fake_smtp() as up:
        proxy = await make_proxy(
            [{"name": "smtp", "target_port": up.port, "target_tls": "implicit"}]
        )
        replies = await send_mail(proxy.port())
    assert replies[0][0] == 421, replies
    assert up.messages == [] and proxy.report_files() == []


async def test_upstream_expired_certificate(make_proxy, ca, ca_file):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert = ca.issue_cert("127.0.0.1", not_before=past - dt.timedelta(days=365), not_after=past)
    async with fake_smtp(tls=server_context(cert)) as up:
        proxy = await make_proxy(
            [
                {
                    "name": "smtp",
                    "target_port": up.port,
                    "target_tls": "implicit",
                    "target_ca": str(ca_file),
                }
            ]
        )
        replies = await send_mail(proxy.port())
    assert replies[0][0] == 421, replies
    assert up.commands == [] and up.messages == [] and proxy.report_files() == []


async def test_upstream_below_tls_1_2_is_refused(make_proxy, upstream_cert, ca_file):
    ctx = old_tls_server(upstream_cert)
    async with fake_smtp(tls=ctx) as up:
        proxy = await make_proxy(
            [
                {
                    "name": "smtp",
                    "target_port": up.port,
                    "target_tls": "implicit",
                    "target_ca": str(ca_file),
                }
            ]
        )
        replies = await send_mail(proxy.port())
    assert replies[0][0] == 421, replies
    assert up.commands == [] and up.messages == []
