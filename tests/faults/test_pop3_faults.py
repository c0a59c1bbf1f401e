"""POP3 through the proxy when things break mid-RETR (DESIGN invariants 1 and 2).

The rule under test: a client that has not seen the terminating ".\\r\\n" of a RETR never
DELEs that message, so the proxy withholds it until the copy is durable and drops the
client when the copy fails or the message cannot be completed. Every case checks what
actually reached the client (the message data, but no end-of-response), that no
report (or half-written temp file) is left, and, against real Dovecot, that the message
is still on the server.

- full report directory (a real tmpfs, mounted here; needs root, skipped otherwise)
- the provider hangs up halfway through a message (in-loop fake provider)
- the provider stalls beyond upstream_timeout (fake provider, autojump clock)
- the client goes idle (real Dovecot; real time, idle_timeout 1 s): no QUIT upstream,
  so a DELE it sent is not carried out
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
from test_disk_full import fill, tmpfs

from fixtures.dovecot import DovecotServer, start_dovecot

pytestmark = pytest.mark.e2e

TERMINATOR = b"\r\n.\r\n"
MESSAGE = (
    b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: fault\r\n\r\n"
    + b"".join(b"line %04d of the message body, long enough to stream\r\n" % i for i in range(400))
    + b".a stuffed line\r\nlast\r\n"
)


# --- a raw POP3 client ------------------------------------------------------------------


class Wire:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.closed = False

    async def _more(self, max_wait: float) -> bool:
        with trio.move_on_after(max_wait):
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = True
                return False
            self.buf += data
            return True
        return False

    async def line(self, max_wait: float = 10.0) -> bytes | None:
        while b"\r\n" not in self.buf:
            if self.closed or not await self._more(max_wait):
                return None
        i = self.buf.index(b"\r\n") + 2
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    async def command(self, line: bytes, max_wait: float = 10.0) -> bytes | None:
        await self.stream.send_all(line + b"\r\n")
        return await self.line(max_wait)

    async def until_eof(self, max_wait: float = 10.0) -> bytes:
        """Everything until the proxy closes the connection (asserts it does)."""
        while not self.closed:
            if not await self._more(max_wait) and not self.closed:
                raise AssertionError(f"connection still open after {max_wait}s")
        out = bytes(self.buf)
        self.buf.clear()
        return out


@contextlib.asynccontextmanager
async def pop3_wire(port: int) -> AsyncIterator[Wire]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        yield Wire(stream)
    finally:
        await trio.aclose_forcefully(stream)


async def login(w: Wire, max_wait: float = 10.0) -> None:
    greeting = await w.line(max_wait)
    assert greeting is not None and greeting.startswith(b"+OK"), greeting
    assert (await w.command(b"USER alice", max_wait) or b"").startswith(b"+OK")
    assert (await w.command(b"PASS secret", max_wait) or b"").startswith(b"+OK")


def assert_cut_before_end(received: bytes) -> None:
    """Part of the message reached the client, but never the end of the response."""
    assert received, "no message data reached the client"
    assert MESSAGE.startswith(received[: len(received) // 2]), received[:200]
    assert TERMINATOR not in b"\r\n" + received, "the end of the RETR reached the client"
    assert not received.endswith(b".\r\n") or received.endswith(b"..\r\n")


# --- a scriptable POP3 provider in the test's Trio loop -------------------------------


@dataclass
class FakePop3:
    """Answers USER/PASS/UIDL/QUIT; RETR sends `cut` bytes of MESSAGE, then `then`."""

    cut: int = len(MESSAGE) // 2
    then: str = "close"  # "close" (hang up), "stall" (send nothing more) or "dribble"
    port: int = 0
    commands: list[bytes] = field(default_factory=list)

    async def session(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        try:
            await stream.send_all(b"+OK fake POP3 ready\r\n")
            while True:
                while b"\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                i = buf.index(b"\r\n") + 2
                line = bytes(buf[:i])
                del buf[:i]
                self.commands.append(line)
                verb = line.split()[0].upper() if line.split() else b""
                if verb == b"UIDL":
                    await stream.send_all(b"+OK 1 uid-one\r\n")
                elif verb == b"RETR":
                    stuffed = MESSAGE.replace(b"\r\n.", b"\r\n..")
                    await stream.send_all(b"+OK %d octets\r\n" % len(MESSAGE) + stuffed[: self.cut])
                    if self.then == "stall":
                        await trio.sleep_forever()
                    if self.then == "dribble":  # the rest, 10 bytes every 4 s
                        rest = stuffed[self.cut :] + b".\r\n"
                        for i in range(0, len(rest), 10):
                            await stream.send_all(rest[i : i + 10])
                            await trio.sleep(4)
                        continue
                    return
                elif verb == b"QUIT":
                    await stream.send_all(b"+OK bye\r\n")
                    return
                else:
                    await stream.send_all(b"+OK\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


@contextlib.asynccontextmanager
async def fake_pop3(**options: object) -> AsyncIterator[FakePop3]:
    fake = FakePop3(**options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake.session, 0, host="127.0.0.1"))
        fake.port = listeners[0].socket.getsockname()[1]
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


def listener(port: int) -> dict[str, object]:
    return {"name": "pop3", "protocol": "pop3", "target_port": port}


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    with start_dovecot() as d:  # plain POP3 on loopback, user alice / secret
        yield d


# --- the cases --------------------------------------------------------------------------


async def test_disk_full_during_retr_drops_client_before_the_dot(dovecot, make_proxy):
    served = dovecot.deliver("alice", MESSAGE)
    proxy = await make_proxy([listener(dovecot.port)])
    with tmpfs(proxy.reports_dir):
        filler = fill(proxy.reports_dir)
        async with pop3_wire(proxy.port("pop3")) as w:
            await login(w)
            status = await w.command(b"RETR 1")
            assert status is not None and status.startswith(b"+OK"), status
            received = await w.until_eof()
        assert_cut_before_end(received)
        assert received == served.replace(b"\r\n.", b"\r\n..")  # all of it but the dot
        assert [p.name for p in proxy.report_files()] == ["filler"]  # no partial report
        assert dovecot.maildir_count("alice") == 1  # still on the server

        filler.unlink()  # space returns: the very next RETR is archived and completes
        async with pop3_wire(proxy.port("pop3")) as w:
            await login(w)
            assert (await w.command(b"RETR 1") or b"").startswith(b"+OK")
            body = bytearray()
            while not body.endswith(b"\r\n.\r\n"):
                line = await w.line()
                assert line is not None, bytes(body[-200:])
                body += line
            assert (await w.command(b"QUIT") or b"").startswith(b"+OK")
        (rep,) = await proxy.wait_reports(1)
        assert rep.eml == served
        assert rep["pop3"]["user"] == "alice" and rep["pop3"]["msg"] == 1


async def test_disk_full_mid_message_drops_client(dovecot, make_proxy):
    """The disk fills while a message larger than the whole file system streams."""
    big = MESSAGE + b"x" * 70 + b"\r\n"
    big = big.replace(b"last\r\n", b"".join(b"%0300d\r\n" % i for i in range(1200)))
    assert len(big) > 300 * 1024  # > the 256k tmpfs
    dovecot.deliver("alice", big)
    proxy = await make_proxy([listener(dovecot.port)])
    with tmpfs(proxy.reports_dir):
        async with pop3_wire(proxy.port("pop3")) as w:
            await login(w)
            assert (await w.command(b"RETR 1") or b"").startswith(b"+OK")
            received = await w.until_eof()
        assert received and TERMINATOR not in b"\r\n" + received
        assert proxy.report_files() == []
        assert dovecot.maildir_count("alice") == 1


async def test_upstream_hangs_up_mid_retr(make_proxy):
    async with fake_pop3(then="close") as up:
        proxy = await make_proxy([listener(up.port)])
        async with pop3_wire(proxy.port("pop3")) as w:
            await login(w)
            status = await w.command(b"RETR 1")
            assert status == b"+OK %d octets\r\n" % len(MESSAGE), status
            received = await w.until_eof()
    stuffed = MESSAGE.replace(b"\r\n.", b"\r\n..")
    assert_cut_before_end(received)
    assert stuffed[: up.cut].startswith(received) and len(received) >= up.cut - 4
    assert up.commands[-2:] == [b"UIDL 1\r\n", b"RETR 1\r\n"]
    assert proxy.report_files() == []  # no report, no temp file


async def test_upstream_stalls_beyond_upstream_timeout(make_proxy, autojump_clock):
    async with fake_pop3(then="stall") as up:
        proxy = await make_proxy([listener(up.port)], upstream_timeout=30, idle_timeout=30)
        async with pop3_wire(proxy.port("pop3")) as w:
            await login(w, max_wait=math.inf)
            assert (await w.command(b"RETR 1", max_wait=math.inf) or b"").startswith(b"+OK")
            start = trio.current_time()
            received = await w.until_eof(max_wait=1_000)
            waited = trio.current_time() - start
    assert 29 <= waited <= 40, waited  # cut off after upstream_timeout, not before
    assert_cut_before_end(received)
    assert b"-ERR" not in received  # mid-message: a status line would corrupt it
    assert proxy.report_files() == []


async def test_provider_dribbling_a_retr_inside_its_timeout_is_cut_off(make_proxy, autojump_clock):
    """A provider body at 10 bytes every 4 s under a 5 s upstream_timeout (issue 10 item
    4): progress every time, but far below min_data_rate -- the client is dropped before
    the end of the message and nothing is archived."""
    async with fake_pop3(then="dribble", cut=100) as up:
        proxy = await make_proxy([listener(up.port)], upstream_timeout=5, idle_timeout=30)
        async with pop3_wire(proxy.port("pop3")) as w:
            await login(w, max_wait=math.inf)
            assert (await w.command(b"RETR 1", max_wait=math.inf) or b"").startswith(b"+OK")
            received = await w.until_eof(max_wait=100_000)
    assert_cut_before_end(received)
    assert len(received) < len(MESSAGE) // 2
    assert proxy.report_files() == []


async def test_idle_client_times_out_and_nothing_is_deleted(dovecot, make_proxy):
    dovecot.deliver("alice", MESSAGE)
    proxy = await make_proxy([listener(dovecot.port)], idle_timeout=1.0)
    async with pop3_wire(proxy.port("pop3")) as w:
        await login(w)
        assert (await w.command(b"DELE 1") or b"").startswith(b"+OK")
        start = trio.current_time()
        rest = await w.until_eof(max_wait=10)
        waited = trio.current_time() - start
    assert rest == b"-ERR [SYS/TEMP] idle timeout\r\n", rest
    assert 0.9 <= waited < 5, waited
    assert proxy.report_files() == []
    # No QUIT went upstream: Dovecot never entered UPDATE, the DELE was not carried out.
    with trio.move_on_after(5):
        while dovecot.maildir_count("alice") != 1:  # noqa: ASYNC110 - file system
            await trio.sleep(0.05)
    assert dovecot.maildir_count("alice") == 1
