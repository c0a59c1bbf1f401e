"""TLS for the proxy's hot path: one syscall per wake-up, no Trio machinery per record.

Why this exists. `trio.SSLStream` moves every operation through a general retry loop
(a lock, a conflict detector, checkpoints, a transport `send_all` per flush); on a POP3
RETR of 50 KB through TLS on both sides that was most of the relay's Python time, and
it made a TLS RETR cost the relay about twice the CPU of a plain one (docs/
performance.md, eighth pass). Letting OpenSSL drive the socket (`ssl.SSLSocket`) was
tried first: without read-ahead (which Python's ssl module does not expose) OpenSSL
reads each record with two read(2)s, 45 syscalls per RETR from Dovecot.

`FastTlsStream` keeps TLS in memory BIOs as trio does, on the `FastSocketStream`'s own
socket, with the least work per operation:
- a receive reads the socket once (into a shared buffer, `fastsock.cipher_buffer`),
  feeds the bytes to OpenSSL and decrypts every complete record they hold, up to
  `max_bytes`, straight into the shared plaintext buffer; it goes back to the socket
  (and to the scheduler) only when OpenSSL has no complete record left;
- a send encrypts `data` (one `SSLObject.write`) and sends the records in one
  `send(2)` where the socket takes them.

What stays as with `trio.SSLStream` (the session cannot tell them apart):
- Errors: a TLS or socket error is `trio.BrokenResourceError` with the `ssl.SSLError`
  as its cause (what `session._reason` and the TLS hints read); an EOF without TLS's
  close_notify is an error, a close_notify is an EOF (`b""`).
- Timeouts and cancellation: the handshake runs under the caller's scope; receives take
  the same deadlines (the `fastsock` deadline sweeper) and yield every `YIELD_EVERY`
  operations. Nothing decrypted is lost to a cancellation: no await between decrypting
  and returning. Bytes OpenSSL produces while reading (a TLS 1.3 key update's answer)
  go out before the next send or wait.
- Bounded memory: what OpenSSL buffers is at most one read of the socket (64 KiB) and
  one `send_all`'s records.
"""

from __future__ import annotations

import socket
import ssl

import trio
from trio.lowlevel import checkpoint

from proxy.fastsock import RECEIVE_BUFFER, FastSocketStream, cipher_buffer, shared_buffer


class FastTlsStream(FastSocketStream):
    """A TLS session on a `FastSocketStream`'s socket (build with `wrap()`).

    `close()` is the plain stream's: no close_notify, as `trio.aclose_forcefully` of a
    `trio.SSLStream`. A session that ends abortively (an archive failure in the middle
    of a RETR) must look broken to the client, never like a clean end of the data (mpop,
    for one, waits out a clean end that comes mid-message).
    """

    __slots__ = ("_tls", "_incoming", "_outgoing")

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        super().__init__(sock)
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing

    @classmethod
    async def wrap(
        cls,
        raw: FastSocketStream,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> FastTlsStream:
        """Handshake TLS over `raw`, whose socket the result shares (as a
        `trio.SSLStream` shares its transport: closing either closes the connection;
        `raw` must not be used for anything else). Call under a timeout scope. A failed
        or cancelled handshake closes the socket. Raises trio.BrokenResourceError."""
        if raw._closed:
            raise trio.ClosedResourceError("socket was already closed")
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            tls = ctx.wrap_bio(
                incoming, outgoing, server_side=server_side, server_hostname=server_hostname
            )
        except (ssl.SSLError, ValueError) as e:
            raise trio.BrokenResourceError(f"TLS setup failed: {e}") from e
        stream = cls(raw.socket, tls, incoming, outgoing)
        try:
            await stream._handshake()
        except BaseException:
            stream.close()
            raise
        return stream

    async def _handshake(self) -> None:
        tls = self._tls
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush_outgoing()
                await self._read_socket(float("inf"))
            except ssl.SSLError as e:
                try:
                    await self._flush_outgoing()  # the alert, so the peer learns why
                except trio.BrokenResourceError:
                    pass
                raise trio.BrokenResourceError(f"TLS handshake failed: {e}") from e
        await self._flush_outgoing()

    def version(self) -> str | None:
        """The negotiated protocol ("TLSv1.3"), as `trio.SSLStream.version()`."""
        return self._tls.version()

    # --- the socket side ------------------------------------------------------------
    async def _flush_outgoing(self) -> None:
        if self._outgoing.pending:
            await self._send_bytes(self._outgoing.read())

    async def _read_socket(self, deadline: float) -> bool:
        """One read of the socket into OpenSSL's input (waiting for it to be readable);
        False once `deadline` came first. At the socket's EOF, OpenSSL is told."""
        sock = self.socket
        buf = cipher_buffer()
        while True:
            try:
                n = sock.recv_into(buf, RECEIVE_BUFFER)
            except BlockingIOError:
                if not self._sending:  # (a send in progress flushes it itself)
                    await self._flush_outgoing()  # never wait with an answer unsent
                if not await self._wait_data(deadline):
                    return False
                continue
            except OSError as e:
                if self._closed:
                    raise trio.ClosedResourceError("socket was already closed") from None
                raise trio.BrokenResourceError(f"socket receive failed: {e}") from e
            if n:
                self._incoming.write(buf[:n])
            else:
                self._incoming.write_eof()
            return True

    # --- the stream -----------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._start_send()
        try:
            if data:
                try:
                    self._tls.write(data)  # into the outgoing BIO: never blocks
                except ssl.SSLError as e:  # (a TLS 1.2 renegotiation mid-write included)
                    raise trio.BrokenResourceError(f"TLS send failed: {e}") from e
                await self._flush_outgoing()
                self._sent = True
            await self._fairness()
        finally:
            self._sending = False

    async def receive_before(self, max_bytes: int | None, deadline: float) -> bytes | None:
        """The plaintext of every complete record there, up to `max_bytes` (at most
        RECEIVE_BUFFER), or None once trio.current_time() reaches `deadline` first;
        b"" at close_notify."""
        size = RECEIVE_BUFFER if max_bytes is None else min(max_bytes, RECEIVE_BUFFER)
        self._start_receive(size)
        try:
            tls = self._tls
            if self._sent:  # the answer to what we sent cannot be here yet: wait first
                self._sent = False
                if (
                    not self._incoming.pending
                    and not tls.pending()
                    and deadline > trio.current_time()
                    and not await self._wait_data(deadline)
                ):
                    return None
            view = shared_buffer()
            got = 0
            while got < size:
                try:
                    n: int = tls.read(size - got, view[got:size])  # type: ignore[assignment]
                except ssl.SSLWantReadError:
                    if got:
                        break  # every complete record that was there
                    if not await self._read_socket(deadline):
                        return None
                    continue
                except ssl.SSLZeroReturnError:
                    n = 0  # close_notify
                except ssl.SSLError as e:
                    if got:
                        break  # the bytes before the error first; the next call raises it
                    raise trio.BrokenResourceError(f"TLS receive failed: {e}") from e
                if not n:
                    break  # EOF (after what came before it)
                got += n
            data = bytes(view[:got])
            await self._fairness()
            return data
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        """Send TLS's close_notify (no more data from us); the socket stays open."""
        await checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("socket was already closed")
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self._tls.unwrap()  # close_notify into the outgoing BIO
        except ssl.SSLError:
            pass  # it wants the peer's close_notify (not waited for), or TLS is broken
        try:
            if self._outgoing.pending:
                self.socket.send(self._outgoing.read())  # one try: never waits
        except OSError:
            pass  # would block or broken
