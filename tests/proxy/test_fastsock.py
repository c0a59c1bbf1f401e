"""proxy.fastsock: the hot-path TCP stream keeps trio.SocketStream's contract."""

from __future__ import annotations

import socket

import pytest
import trio

from proxy import fastsock
from proxy.fastsock import FastListener, FastSocketStream, close_stream, connect_tcp


async def _pair() -> tuple[trio.abc.Stream, trio.abc.Stream, trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    fl = FastListener(listeners[0])
    port = listeners[0].socket.getsockname()[1]
    client = await connect_tcp("127.0.0.1", port)
    server = await fl.accept()
    return client, server, listeners[0]


async def test_bytes_both_ways_and_eof() -> None:
    client, server, lst = await _pair()
    assert isinstance(client, FastSocketStream) and isinstance(server, FastSocketStream)
    big = bytes(range(256)) * 4096  # 1 MiB: more than a socket buffer, so sends must wait
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, big)
        got = bytearray()
        while len(got) < len(big):
            got += await server.receive_some(70_000)  # above the shared buffer: plain recv
    assert bytes(got) == big
    await client.send_eof()
    assert await server.receive_some() == b""
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    await close_stream(client)
    await close_stream(server)
    await lst.aclose()


async def test_receive_before_deadline_returns_none() -> None:
    client, server, lst = await _pair()
    assert await fastsock.receive_before(server, 1024, trio.current_time() + 0.05) is None
    await client.send_all(b"250 ok\r\n")
    assert await fastsock.receive_before(server, 1024, trio.current_time() + 30) == b"250 ok\r\n"
    server.close()  # type: ignore[attr-defined]
    client.close()  # type: ignore[attr-defined]
    await lst.aclose()


async def test_close_wakes_a_waiting_receiver_and_concurrent_use_is_refused() -> None:
    client, server, lst = await _pair()
    errors: list[type[BaseException]] = []

    async def reader() -> None:
        try:
            await server.receive_some()
        except trio.ClosedResourceError as e:
            errors.append(type(e))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        server.close()  # type: ignore[attr-defined]
    assert errors == [trio.ClosedResourceError]
    with pytest.raises(trio.ClosedResourceError):
        await server.receive_some()
    client.close()  # type: ignore[attr-defined]
    await lst.aclose()


async def test_peer_reset_is_broken_resource() -> None:
    client, server, lst = await _pair()
    raw = client.socket  # type: ignore[attr-defined]
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # type: ignore[attr-defined]  # RST
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):
            await server.send_all(b"x" * 65536)
            await server.receive_some()
    server.close()  # type: ignore[attr-defined]
    await lst.aclose()


async def test_connect_refused_and_host_names() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        await connect_tcp("127.0.0.1", port)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    # a name: resolved and connected by trio.open_tcp_stream, then the same fast stream
    named = await connect_tcp("localhost", port)
    assert type(named) is FastSocketStream
    server = await FastListener(listeners[0]).accept()
    await named.send_all(b"hello")
    assert await server.receive_some() == b"hello"
    await close_stream(named)
    await close_stream(server)
    await listeners[0].aclose()


async def test_a_stream_that_never_waits_still_lets_other_tasks_run() -> None:
    """Fairness: data always ready must not starve the scheduler (nor a cancel)."""
    client, server, lst = await _pair()
    await client.send_all(b"y" * 4000)  # fits the socket buffers
    other_ran = trio.Event()

    async def other() -> None:
        other_ran.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        reads = 0
        while not other_ran.is_set():
            await server.receive_some(10)  # always ready: never waits
            reads += 1
            assert reads <= 2 * fastsock.YIELD_EVERY  # the yield, then at worst one more round
    with trio.CancelScope() as scope:
        scope.cancel()
        for _ in range(fastsock.YIELD_EVERY + 1):
            await server.receive_some(10)
    assert scope.cancelled_caught
    client.close()  # type: ignore[attr-defined]
    server.close()  # type: ignore[attr-defined]
    await lst.aclose()


class CountingSocket(socket.socket):
    """A stdlib socket that counts its receive calls (each one a syscall)."""

    receives = 0

    def recv_into(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        CountingSocket.receives += 1
        return super().recv_into(*args, **kwargs)


def _counting_pair() -> tuple[FastSocketStream, socket.socket]:
    a, b = socket.socketpair()
    counted = CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    CountingSocket.receives = 0
    return FastSocketStream(counted), b


async def test_a_receive_after_a_send_waits_before_its_first_syscall() -> None:
    stream, peer = _counting_pair()
    await stream.send_all(b"NOOP\r\n")
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            await trio.sleep(0.05)
            assert peer.recv(100) == b"NOOP\r\n"
            peer.send(b"250 ok\r\n")

        nursery.start_soon(answer)
        assert await stream.receive_some() == b"250 ok\r\n"
    assert CountingSocket.receives == 1  # no EAGAIN try before the answer came
    await close_stream(stream)
    peer.close()


async def test_data_already_there_is_received_with_or_without_a_send_before() -> None:
    stream, peer = _counting_pair()
    peer.send(b"first")
    assert await stream.receive_some() == b"first"  # no send before: the syscall first
    assert CountingSocket.receives == 1
    await stream.send_all(b"x")
    peer.send(b"pipelined")  # there before the receive: the wait finds it at once
    assert await stream.receive_before(100, trio.current_time() + 5) == b"pipelined"
    await stream.send_all(b"y")
    peer.send(b"late")  # a deadline already past: the syscall first, the data returned
    assert await stream.receive_before(100, trio.current_time() - 1) == b"late"
    await close_stream(stream)
    peer.close()
