"""TCP streams for the proxy's hot path: the syscall first, the Trio scheduler only on a wait.

Why this exists. `trio.SocketStream` makes every `send`/`recv` two checkpoints
(`checkpoint_if_cancelled` before, `cancel_shielded_checkpoint` after), i.e. a pass
through the scheduler per syscall, plus a conflict detector, a memoryview and two
context managers; `open_tcp_stream` runs a happy-eyeballs nursery even for an IP
literal; `aclose_forcefully` opens a cancel scope per socket. On the SMTP dialogue of a
10 KB message (about 14 sends, 14 receives, an accept and a connect per message) that
Trio machinery was the largest share of a worker's Python time (py-spy, docs/
performance.md). `FastSocketStream` calls the non-blocking syscall directly and waits
(`wait_readable`/`wait_writable`) only when it would block.

What stays true:
- It is a `trio.abc.HalfCloseableStream`: `proxy.fasttls` (or `trio.SSLStream`) wraps
  it for TLS, and the session code cannot tell it from `trio.SocketStream` (same exceptions:
  `BrokenResourceError` for socket errors, `ClosedResourceError` after close,
  `BusyResourceError` for two concurrent senders or receivers).
- Cancellation and fairness: an operation that does not have to wait still yields to
  the scheduler every `YIELD_EVERY` operations of that stream, so a peer that always has
  data ready cannot starve the other sessions or outlive a cancelled scope by more than
  that many chunks.
- A receive right after a send on the same stream waits first: the peer's answer takes
  at least a round trip, so trying the syscall first would only fail (EAGAIN, an
  exception) -- about half the receives of an SMTP dialogue did. Data that is there
  anyway is found by the wait at once; a deadline already past tries the syscall first.
- Bounded memory: receives go through one module-wide buffer (the Trio thread is the
  only caller and nothing awaits between the `recv_into` and the copy), so a read of
  64 KiB allocates only the bytes that arrived, never a 64 KiB block per read.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio.lowlevel import checkpoint, notify_closing, wait_readable, wait_writable

log = logging.getLogger("mailtee.serve")

#: after this many operations that did not have to wait, one yield to the scheduler
YIELD_EVERY = 16
#: the shared receive buffer (a larger request falls back to a plain `recv`)
RECEIVE_BUFFER = 64 * 1024
#: what `trio.SocketStream` sets too (bounds the kernel's unsent queue per socket)
NOTSENT_LOWAT = 2**14

_buffer = bytearray(RECEIVE_BUFFER)
_view = memoryview(_buffer)


_cipher = memoryview(bytearray(RECEIVE_BUFFER))


def shared_buffer() -> memoryview:
    """The module-wide receive buffer (Trio thread only; copy out before any await)."""
    return _view


def cipher_buffer() -> memoryview:
    """A second one, for proxy.fasttls's raw TLS bytes (same rules)."""
    return _cipher


def _tune(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
    except OSError:
        pass  # not TCP (a Unix socket in a test): nothing to tune


class FastSocketStream(trio.abc.HalfCloseableStream):
    """A connected, non-blocking stdlib TCP socket as a Trio stream (see the module doc)."""

    __slots__ = (
        "socket", "_unyielded", "_closed", "_sending", "_receiving", "_eof_sent", "_timed_out",
        "_sent",
    )  # fmt: skip

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        #: the stdlib socket (getpeername, fileno, ...)
        self.socket = sock
        self._unyielded = 0
        self._closed = False
        self._sending = False
        self._receiving = False
        self._eof_sent = False
        self._timed_out = False  # set by the deadline sweeper (_Deadlines) before it wakes us
        self._sent = False  # bytes sent since the last receive: the next one waits first

    async def _fairness(self) -> None:
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await checkpoint()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._start_send()
        try:
            await self._send_bytes(data)
            if data:
                self._sent = True
            await self._fairness()
        finally:
            self._sending = False

    def _start_send(self) -> None:
        """Refuse a send on a closed, half-closed or busy stream; else mark it sending."""
        if self._closed:
            raise trio.ClosedResourceError("socket was already closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True

    def _start_receive(self, max_bytes: int) -> None:
        """Refuse a receive that cannot be (bad size, closed, busy); else mark it."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._closed:
            raise trio.ClosedResourceError("socket was already closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True

    async def _send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """All of `data` to the socket, waiting while it would block (the caller holds
        `_sending`)."""
        sock = self.socket
        total = len(data)
        sent = 0
        view: memoryview | None = None
        while sent < total:
            try:
                if sent == 0:
                    sent = sock.send(data)
                else:
                    if view is None:
                        view = memoryview(data)
                    sent += sock.send(view[sent:])
            except BlockingIOError:
                self._unyielded = 0
                await wait_writable(sock)
                if self._closed:
                    raise trio.ClosedResourceError("closed while sending") from None
            except OSError as e:
                if self._closed:
                    raise trio.ClosedResourceError("socket was already closed") from None
                raise trio.BrokenResourceError(f"socket send failed: {e}") from e
        if view is not None:
            view.release()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.receive_before(max_bytes, float("inf"))
        assert data is not None
        return data

    async def receive_before(self, max_bytes: int | None, deadline: float) -> bytes | None:
        """`receive_some`, or None once trio.current_time() reaches `deadline` first.

        Only a receive that has to wait opens a cancel scope (the deadline's).
        """
        if max_bytes is None:
            max_bytes = RECEIVE_BUFFER
        self._start_receive(max_bytes)
        try:
            sock = self.socket
            if self._sent:  # the answer to what we sent cannot be here yet: wait first
                self._sent = False
                # (a deadline already past: the syscall first, as without a send)
                if deadline > trio.current_time() and not await self._wait_data(deadline):
                    return None
            while True:
                try:
                    if max_bytes <= RECEIVE_BUFFER:
                        n = sock.recv_into(_view, max_bytes)
                        data = bytes(_view[:n]) if n else b""
                    else:
                        data = sock.recv(max_bytes)
                except BlockingIOError:
                    if not await self._wait_data(deadline):
                        return None
                    continue
                except OSError as e:
                    if self._closed:
                        raise trio.ClosedResourceError("socket was already closed") from None
                    raise trio.BrokenResourceError(f"socket receive failed: {e}") from e
                await self._fairness()
                return data
        finally:
            self._receiving = False

    async def _wait_data(self, deadline: float) -> bool:
        """Wait until the socket is readable; False once `deadline` came first."""
        self._unyielded = 0
        if deadline == float("inf"):
            await wait_readable(self.socket)
        elif not await self._wait_readable_until(deadline):
            return False
        if self._closed:
            raise trio.ClosedResourceError("closed while receiving")
        return True

    async def _wait_readable_until(self, deadline: float) -> bool:
        """wait_readable, or False once `deadline` has passed (see _Deadlines)."""
        if deadline <= trio.current_time():
            await checkpoint()
            return False
        deadlines = _deadlines()
        deadlines.add(self, deadline)
        try:
            await wait_readable(self.socket)
        except trio.ClosedResourceError:
            if self._timed_out and not self._closed:
                self._timed_out = False
                return False
            raise
        finally:
            deadlines.waiting.pop(self, None)
        self._timed_out = False  # woken by data in the same instant: not a timeout
        return True

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("socket was already closed")
        await wait_writable(self.socket)

    async def send_eof(self) -> None:
        await checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("socket was already closed")
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise trio.BrokenResourceError(f"socket shutdown failed: {e}") from e

    def close(self) -> None:
        """Close now (no await: a closing session needs no scheduler pass)."""
        if not self._closed:
            self._closed = True
            if self._sending or self._receiving:  # only then can a task wait on it
                try:
                    notify_closing(self.socket)  # wakes it with ClosedResourceError
                except (OSError, ValueError):
                    pass
            self.socket.close()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()


#: how often the deadline sweeper looks at the waiting receives (a receive's deadline
#: fires up to this much late; the deadlines are idle timeouts of seconds to minutes)
SWEEP_INTERVAL = 0.1


class _Deadlines:
    """The deadlines of the receives that wait, checked by one sweeper task per run.

    Why not `trio.move_on_at` per receive: creating, entering and leaving a cancel scope
    per wait was a tenth of a worker's Python time on the SMTP path, for deadlines
    (idle and provider timeouts) that almost never fire. Registering a deadline here is
    a dict store. The sweeper wakes every SWEEP_INTERVAL while any receive waits, and
    ends an overdue wait with `notify_closing` (which makes `wait_readable` raise but
    leaves the socket open); the stream then reports "deadline passed" (None).
    """

    def __init__(self) -> None:
        self.waiting: dict[FastSocketStream, float] = {}
        self.idle: trio.Event | None = None

    def add(self, stream: FastSocketStream, deadline: float) -> None:
        self.waiting[stream] = deadline
        if self.idle is not None:
            self.idle.set()
            self.idle = None

    async def run(self) -> None:
        while True:
            if not self.waiting:
                self.idle = trio.Event()
                await self.idle.wait()
                continue
            await trio.sleep(SWEEP_INTERVAL)
            now = trio.current_time()
            overdue = [s for s, d in self.waiting.items() if d <= now and not s._sending]
            for stream in overdue:
                del self.waiting[stream]
                stream._timed_out = True
                try:
                    notify_closing(stream.socket)
                except (OSError, ValueError):
                    pass


_DEADLINES: trio.lowlevel.RunVar[_Deadlines] = trio.lowlevel.RunVar("fastsock_deadlines")


def _deadlines() -> _Deadlines:
    try:
        return _DEADLINES.get()
    except LookupError:
        deadlines = _Deadlines()
        _DEADLINES.set(deadlines)
        trio.lowlevel.spawn_system_task(deadlines.run, name="fastsock deadlines")
        return deadlines


class FastListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts like `trio.SocketListener`, handing out `FastSocketStream`s.

    `socket` stays the Trio socket object (serve.py reads its address and closes it).
    """

    def __init__(self, listener: trio.SocketListener) -> None:
        self.socket = listener.socket
        self._std: socket.socket = listener.socket._sock  # type: ignore[attr-defined]
        self._unyielded = 0

    async def accept(self) -> trio.abc.Stream:
        while True:
            if self.socket.fileno() == -1:
                raise trio.ClosedResourceError("the listener was closed")
            try:
                sock, _ = self._std.accept()
            except BlockingIOError:
                self._unyielded = 0
                await wait_readable(self._std)
                continue
            except OSError as e:
                if e.errno == errno.EBADF:
                    raise trio.ClosedResourceError("the listener was closed") from None
                raise  # EMFILE & co: trio.serve_listeners logs them and retries
            _tune(sock)
            stream = FastSocketStream(sock)
            self._unyielded += 1
            if self._unyielded >= YIELD_EVERY:
                self._unyielded = 0
                await checkpoint()
            return stream

    async def aclose(self) -> None:
        self.socket.close()
        await checkpoint()


@functools.lru_cache(maxsize=256)
def _ip_family(host: str) -> int | None:
    """AF_INET/AF_INET6 for an IP literal, None for a name that needs resolving."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


async def connect_tcp(host: str, port: int) -> trio.abc.Stream:
    """Connect to host:port (call under a timeout scope).

    An IP literal is connected directly; a host name goes through `trio.open_tcp_stream`
    (resolution and happy eyeballs), whose socket then becomes a `FastSocketStream` too,
    so a provider named by host name gets the same data path (and proxy.fasttls).
    """
    family = _ip_family(host)
    if family is None:
        opened = await trio.open_tcp_stream(host, port)
        fd = opened.socket.detach()
        return FastSocketStream(socket.socket(fileno=fd))
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        _tune(sock)
        err = sock.connect_ex((host, port))
        if err == errno.EINPROGRESS:
            await wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        try:
            notify_closing(sock)
        except (OSError, ValueError):
            pass
        sock.close()
        raise
    return FastSocketStream(sock)


async def receive_before(stream: trio.abc.ReceiveStream, max_bytes: int, deadline: float) -> Any:
    """`stream.receive_some(max_bytes)`, or None once `deadline` passes first."""
    if isinstance(stream, FastSocketStream):  # or proxy.fasttls.FastTlsStream
        return await stream.receive_before(max_bytes, deadline)
    with trio.move_on_at(deadline):
        return await stream.receive_some(max_bytes)
    return None


async def close_stream(stream: trio.abc.AsyncResource) -> None:
    """Close without waiting for anything (`trio.aclose_forcefully`, minus its cancel
    scope for a `FastSocketStream`)."""
    if isinstance(stream, FastSocketStream):
        stream.close()
    else:
        await trio.aclose_forcefully(stream)


#: accept(2) errors that mean "out of descriptors/memory for now": log, pause, go on
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_RETRY_SLEEP = 0.1


async def serve_listeners(
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    listeners: list[trio.SocketListener],
    *,
    handler_nursery: trio.Nursery,
) -> None:
    """`trio.serve_listeners` with `FastListener`s, minus its per-connection wrapper
    (`aclose_forcefully` after the handler: the handler closes its own stream).

    Runs until cancelled; an accept error other than EMFILE & co propagates.
    """
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_serve_one, FastListener(listener), handler, handler_nursery)


async def _serve_one(
    listener: FastListener,
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    handler_nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                if e.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error(
                    "accept returned %s (%s); retrying in %s seconds",
                    errno.errorcode[e.errno], os.strerror(e.errno), ACCEPT_RETRY_SLEEP,
                )  # fmt: skip
                await trio.sleep(ACCEPT_RETRY_SLEEP)
                continue
            handler_nursery.start_soon(handler, stream)
