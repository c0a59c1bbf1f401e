"""A scriptable, misbehaving SMTP provider in the test's own Trio loop.

Real providers (aiosmtpd, smtp-sink) run in threads or processes, which an autojump
clock cannot see; this one is a Trio task, so timeout tests run in virtual time. Faults:
`greeting` (garbage, an oversized line), `dribble` (seconds between reply bytes: a
1 byte/s provider), `die_in_data` (hang up after that many DATA bytes), `tls` (implicit
TLS with the given server context).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import trio

GREETING = b"220 fake.test ESMTP\r\n"


@dataclass
class FakeSmtp:
    greeting: bytes = GREETING
    dribble: float | None = None
    die_in_data: int | None = None
    tls: ssl.SSLContext | None = None
    port: int = 0
    connections: int = 0
    commands: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # accepted DATA, still dot-stuffed
    tls_failures: int = 0

    async def _send(self, stream: trio.abc.Stream, data: bytes) -> None:
        if self.dribble is None:
            await stream.send_all(data)
            return
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
            await trio.sleep(self.dribble)

    async def session(self, raw: trio.SocketStream) -> None:
        self.connections += 1
        stream: trio.abc.Stream = raw
        try:
            if self.tls is not None:
                stream = trio.SSLStream(raw, self.tls, server_side=True)
                try:
                    await stream.do_handshake()
                except (trio.BrokenResourceError, ssl.SSLError):
                    self.tls_failures += 1
                    return
            await self._send(stream, self.greeting)
            buf = bytearray()
            while True:
                line = await _line(stream, buf)
                if line is None:
                    return
                self.commands.append(line)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    await self._send(stream, b"250-fake.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    await self._send(stream, b"354 go ahead\r\n")
                    data = await _data(stream, buf, self.die_in_data)
                    if data is None:
                        return
                    self.messages.append(data)
                    await self._send(stream, b"250 2.0.0 Ok: queued as FAKE\r\n")
                elif verb == b"QUIT":
                    await self._send(stream, b"221 2.0.0 bye\r\n")
                    return
                else:
                    await self._send(stream, b"250 2.0.0 ok\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def _line(stream: trio.abc.Stream, buf: bytearray) -> bytes | None:
    while b"\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    i = buf.index(b"\r\n") + 2
    line = bytes(buf[:i])
    del buf[:i]
    return line


async def _data(stream: trio.abc.Stream, buf: bytearray, die_after: int | None) -> bytes | None:
    """Read up to and including CRLF.CRLF; None if told to die or the peer left."""
    while True:
        if die_after is not None and len(buf) >= die_after:
            return None
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            data = bytes(buf[: end + 2])
            del buf[: end + 5]
            return data
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buf += chunk


@contextlib.asynccontextmanager
async def fake_smtp(port: int = 0, **options: object) -> AsyncIterator[FakeSmtp]:
    fake = FakeSmtp(**options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, fake.session, port, host="127.0.0.1")
        )
        fake.port = listeners[0].socket.getsockname()[1]
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()
