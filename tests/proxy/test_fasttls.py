"""proxy.fasttls: TLS where OpenSSL does the socket I/O keeps trio.SSLStream's contract.

The peer is always `trio.SSLStream` (its own TLS implementation path in Python's ssl
module: memory BIOs), so each test also checks that the two interoperate.
"""

from __future__ import annotations

import os
import ssl

import pytest
import trio
import trustme

from proxy import fastsock
from proxy.fastsock import FastListener, FastSocketStream, close_stream, connect_tcp
from proxy.fasttls import FastTlsStream
from proxy.tls import wrap

CA = trustme.CA()
CERT = CA.issue_cert("127.0.0.1", "localhost")


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CERT.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    CA.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def _raw_pair() -> tuple[FastSocketStream, FastSocketStream, trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await connect_tcp("127.0.0.1", port)
    server = await FastListener(listeners[0]).accept()
    assert isinstance(client, FastSocketStream) and isinstance(server, FastSocketStream)
    return client, server, listeners[0]


async def _tls_pair(
    fast_side: str = "server",
) -> tuple[trio.abc.Stream, trio.abc.Stream, trio.SocketListener]:
    """(fast, peer, listener): a FastTlsStream on `fast_side`, trio.SSLStream opposite."""
    server_ctx, client_ctx = _contexts()
    raw_client, raw_server, lst = await _raw_pair()
    out: dict[str, trio.abc.Stream] = {}

    async def fast() -> None:
        if fast_side == "server":
            out["fast"] = await wrap(raw_server, server_ctx, server_side=True, timeout=10)
        else:
            out["fast"] = await wrap(
                raw_client, client_ctx, server_side=False, server_hostname="127.0.0.1", timeout=10
            )

    async def peer() -> None:
        if fast_side == "server":
            tls = trio.SSLStream(raw_client, client_ctx, server_hostname="127.0.0.1")
        else:
            tls = trio.SSLStream(raw_server, server_ctx, server_side=True)
        await tls.do_handshake()
        out["peer"] = tls

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fast)
        nursery.start_soon(peer)
    assert type(out["fast"]) is FastTlsStream
    return out["fast"], out["peer"], lst


@pytest.mark.parametrize("fast_side", ["server", "client"])
async def test_bytes_both_ways_through_a_full_socket_buffer(fast_side: str) -> None:
    fast, peer, lst = await _tls_pair(fast_side)
    assert fast.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
    big = os.urandom(3 * 1024 * 1024)  # far more than the socket buffers: sends must wait

    async def drain(stream: trio.abc.Stream, into: bytearray) -> None:
        while len(into) < len(big):
            into += await stream.receive_some(65536)

    for sender, receiver in ((fast, peer), (peer, fast)):
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send_all, big)
            nursery.start_soon(drain, receiver, got)
        assert bytes(got) == big
    await close_stream(fast)
    await close_stream(peer)
    await lst.aclose()


async def test_one_receive_takes_every_record_already_there_in_order() -> None:
    fast, peer, lst = await _tls_pair("client")
    records = [bytes([65 + i]) * 4096 for i in range(12)]
    for record in records:  # one send_all per record: one TLS record each (Dovecot)
        await peer.send_all(record)
    await trio.sleep(0.05)  # all on the wire
    got = await fastsock.receive_before(fast, 10_000, float("inf"))
    assert 4096 < len(got) <= 10_000  # more than one record, never more than asked
    rest = bytearray(got)
    while len(rest) < 12 * 4096:
        rest += await fastsock.receive_before(fast, 64 * 1024, float("inf"))
    assert bytes(rest) == b"".join(records)
    await close_stream(fast)
    await close_stream(peer)
    await lst.aclose()


async def test_deadline_then_data_then_close_notify_is_eof() -> None:
    fast, peer, lst = await _tls_pair("server")
    assert await fastsock.receive_before(fast, 1024, trio.current_time() + 0.05) is None
    await fast.send_all(b"+OK ready\r\n")  # the next receive waits first (the answer)
    assert await peer.receive_some(100) == b"+OK ready\r\n"
    await peer.send_all(b"QUIT\r\n")
    assert await fastsock.receive_before(fast, 1024, trio.current_time() + 10) == b"QUIT\r\n"
    await peer.aclose()  # trio.SSLStream sends close_notify
    assert await fast.receive_some() == b""
    await close_stream(fast)
    await lst.aclose()


async def test_tcp_close_without_close_notify_is_a_broken_resource() -> None:
    fast, peer, lst = await _tls_pair("client")  # (the peer has nothing unread: a FIN)
    assert isinstance(peer, trio.SSLStream)
    raw = peer.transport_stream
    assert isinstance(raw, FastSocketStream)
    raw.close()  # the TCP connection ends, TLS does not
    with pytest.raises(trio.BrokenResourceError) as info:
        await fast.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)  # what session._reason reads
    await close_stream(fast)
    await lst.aclose()


async def test_a_failed_handshake_reports_the_cause_and_leaves_no_descriptor() -> None:
    server_ctx, _ = _contexts()
    untrusting = ssl.create_default_context()  # does not trust CA
    raw_client, raw_server, lst = await _raw_pair()
    fd = raw_client.socket.fileno()
    errors: list[BaseException] = []

    async def client() -> None:
        try:
            await wrap(
                raw_client, untrusting, server_side=False, server_hostname="127.0.0.1", timeout=10
            )
        except trio.BrokenResourceError as e:
            errors.append(e)

    async def server() -> None:
        try:
            await wrap(raw_server, server_ctx, server_side=True, timeout=10)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        nursery.start_soon(server)
    assert errors and isinstance(errors[0].__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by wrap itself: the session closes only the raw stream
    await lst.aclose()


async def test_a_handshake_that_times_out_leaves_no_descriptor() -> None:
    server_ctx, _ = _contexts()
    raw_client, raw_server, lst = await _raw_pair()  # the client never speaks TLS
    fd = raw_server.socket.fileno()
    with pytest.raises(trio.TooSlowError):
        await wrap(raw_server, server_ctx, server_side=True, timeout=0.1)
    with pytest.raises(OSError):
        os.fstat(fd)
    await close_stream(raw_client)
    await lst.aclose()


async def test_concurrent_use_is_refused_and_close_wakes_a_waiting_receiver() -> None:
    fast, peer, lst = await _tls_pair("server")
    errors: list[type[BaseException]] = []

    async def reader() -> None:
        try:
            await fast.receive_some()
        except trio.ClosedResourceError as e:
            errors.append(type(e))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.05)
        with pytest.raises(trio.BusyResourceError):
            await fast.receive_some()
        await close_stream(fast)
    assert errors == [trio.ClosedResourceError]
    with pytest.raises(trio.ClosedResourceError):
        await fast.send_all(b"x")
    await close_stream(peer)
    await lst.aclose()


@pytest.mark.parametrize("closed_first", ["raw", "tls"])
async def test_closing_either_stream_ends_the_connection_without_close_notify(
    closed_first: str,
) -> None:
    """The session's listener closes the stream it accepted, not the TLS stream a
    STARTTLS made of it (proxy/serve.py): that must still end the connection, and, as
    trio.aclose_forcefully of a trio.SSLStream, without close_notify (an abortive end
    looks broken to the peer, never like a clean end of the data)."""
    server_ctx, client_ctx = _contexts()
    raw_client, raw_server, lst = await _raw_pair()
    peer = trio.SSLStream(raw_client, client_ctx, server_hostname="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.do_handshake)
        fast = await wrap(raw_server, server_ctx, server_side=True, timeout=10)
    await fast.send_all(b"+OK half a message")
    assert await peer.receive_some(100) == b"+OK half a message"
    first, second = (raw_server, fast) if closed_first == "raw" else (fast, raw_server)
    await close_stream(first)  # raw: the accepted stream, as serve.py's handler does
    with pytest.raises(trio.BrokenResourceError):
        await peer.receive_some(100)  # a ragged EOF, not b"" (close_notify)
    await close_stream(second)  # closing the other one too is harmless
    await close_stream(peer)
    await lst.aclose()
