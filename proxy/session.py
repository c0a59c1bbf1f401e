"""The Trio driver of one proxied session: sockets, TLS, timeouts and the spool.

Theory of operation. All protocol decisions live in the sans-IO core (`proxy.smtp.relay`,
`proxy.pop3.relay`). This driver only:
1. connects to the provider (and does implicit TLS on either side),
2. performs the core's actions in order, answering the ones that need an answer
   (`StartTls`, `CommitMessage`) before reading anything else,
3. reads the side the core names, with the idle timeout (client) or the provider
   timeout, and feeds the bytes back.
It never reads both sides at once, so there is no pump task to cancel before a TLS
upgrade and no buffered plaintext that could leak into a TLS session. The sockets are
proxy.fastsock streams (the syscall first, the scheduler only when it would block);
while an SMTP message streams, the bytes for the provider are written in fewer, larger
pieces (HOLD_BYTES), always before the provider's next reply is read.
The copy is buffered in memory (or streamed to a temp file when large) and made durable
by the worker's group committer (archive.commit) in a thread, so the Trio loop never
waits for the disk; `CommitMessage` is answered only after the barrier covering the
message has completed (DESIGN invariant 1).
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from archive.commit import Commit, GroupCommitter
from archive.report_sections import ClientSection, MessageStart, SessionReport, TargetSection
from archive.spool import MessageWriter, Spool, SpoolError
from proxy import actions as A
from proxy import tls_hints
from proxy.actions import RelayCore, Side
from proxy.fastsock import close_stream, connect_tcp, receive_before
from proxy.scrub import scrub_log
from proxy.stats import ServiceStats
from proxy.tls import wrap

log = logging.getLogger("mailtee.session")

#: One read. 64 KiB, not more: every read allocates this much before it is shrunk to what
#: arrived, and under many concurrent sessions larger buffers left RSS fragmented high
#: (bench/session_memory.py; proxy/memory.py).
RECEIVE_SIZE = 64 * 1024

#: The window over which `min_data_rate` is averaged while a message streams. A full
#: minute: an honest client on a poor link stalls for seconds, not for a minute.
DATA_RATE_WINDOW = 60.0

#: SMTP: the message bytes relayed upstream while a message streams are held back, up to
#: this many bytes or HOLD_DELAY seconds, and sent together (with the final dot once the
#: copy is committed): a 10 KB message arrives in 3-5 reads, and each relayed chunk was
#: a send(2) and a wake-up of the provider. The provider sees the same bytes, in the same
#: order, before the final dot; only fewer, larger writes.
HOLD_BYTES = 64 * 1024
HOLD_DELAY = 0.5

#: what a broken or reset connection raises while reading or writing
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


@dataclass
class SessionEnv:
    """Everything a session needs besides its sockets (built once per listener)."""

    listener: str
    protocol: str
    target_host: str
    target_port: int
    target_tls: str
    client_tls: str
    spool: Spool
    connect_timeout: float
    idle_timeout: float
    upstream_timeout: float
    server_ctx: ssl.SSLContext | None
    upstream_ctx: ssl.SSLContext | None
    #: the worker's group committer: every copy is made durable through it
    committer: GroupCommitter
    stats: ServiceStats = field(default_factory=ServiceStats)
    #: bytes/s while a message streams (0 = off), and the cap on a whole session (0 = off)
    min_data_rate: int = 0
    max_session_time: float = 0.0


class Session:
    def __init__(self, env: SessionEnv, core: RelayCore, client: trio.abc.Stream, peer: tuple):
        self.env = env
        self.core = core
        self.client: trio.abc.Stream | None = client
        self.upstream: trio.abc.Stream | None = None
        self.peer_ip, self.peer_port = peer[0], peer[1]
        self.client_tls: str | None = None
        self.upstream_tls: str | None = None
        self.writer: MessageWriter | None = None
        self.message_started = 0.0
        self.done = False
        self.reported_lost: set[Side] = set()
        self.retired: list[trio.abc.Stream] = []
        self.tls_error = ""
        self.client_spoke = False  # has the client sent anything yet (tls_hints)?
        self.held: list[bytes] = []  # message bytes for the provider, not sent yet
        self.held_bytes = 0
        self.held_since = 0.0
        self.log = logging.getLogger(f"mailtee.{env.protocol}")

    # --- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.env.client_tls == "implicit":
                if not await self._start_tls(Side.CLIENT):
                    return
            await self._connect_upstream()
            await self._loop()
        finally:
            if self.writer is not None and not self.writer.committed:
                self.writer.abort()
            # Shielded: under a service shutdown the first await would otherwise raise
            # Cancelled and leave the other socket to the garbage collector.
            with trio.CancelScope(shield=True):
                for stream in (self.client, self.upstream, *self.retired):
                    if stream is not None:
                        await close_stream(stream)

    async def _connect_upstream(self) -> None:
        env = self.env
        try:
            with trio.fail_after(env.connect_timeout):
                stream = await connect_tcp(env.target_host, env.target_port)
            self.upstream = stream
            if env.target_tls == "implicit":
                if not await self._start_tls(Side.UPSTREAM, quiet=True):
                    self.core.upstream_unavailable(
                        f"TLS with {env.target_host} failed: {self.tls_error}"
                    )
                    return
        except (OSError, trio.TooSlowError) as e:
            reason = "timed out" if isinstance(e, trio.TooSlowError) else (e.strerror or str(e))
            self.core.upstream_unavailable(f"{env.target_host}:{env.target_port}: {reason}")
            return
        self.core.start()

    async def _loop(self) -> None:
        core = self.core
        # The idle/provider timeout runs from the core's last progress (an action: a
        # complete command, reply or data chunk), not from the last byte: a peer that
        # dribbles one byte just inside the timeout (slowloris) is still cut off.
        # While a message streams, progress alone is not enough: it must also average
        # min_data_rate over each DATA_RATE_WINDOW (10 bytes every 4 s is progress), and
        # no session outlives max_session_time.
        progress_at = trio.current_time()
        ends_at = progress_at + self.env.max_session_time if self.env.max_session_time else None
        rate = _RateWindow(self.env.min_data_rate)
        while True:
            # Answers to actions (archive_result, tls_started) queue further actions.
            while batch := core.actions():
                if len(batch) == 1:  # most batches (one reply, one command): as is
                    await self._perform(batch[0])
                else:
                    await self._perform_batch(coalesce(batch))
                progress_at = trio.current_time()
            if self.done:
                return
            side = core.reading
            if side is None:
                return
            if self.held and side is Side.UPSTREAM:
                await self._send(Side.UPSTREAM, b"")  # the provider's turn: flush first
            stream = self.client if side is Side.CLIENT else self.upstream
            if stream is None:
                if side in self.reported_lost:
                    # The core was told and still asks for this side: a core bug. End the
                    # session rather than spin (never a hot loop on a dead socket).
                    self.log.error("core keeps reading a closed %s; session ended", side.value)
                    return
                self._lost(side, "connection closed")
                continue
            limit = self.env.idle_timeout if side is Side.CLIENT else self.env.upstream_timeout
            deadline = progress_at + limit
            if ends_at is not None:
                deadline = min(deadline, ends_at)
            streaming = self.writer is not None and not self.writer.committed
            deadline = min(deadline, rate.deadline(streaming, side))
            if self.held:
                deadline = min(deadline, self.held_since + HOLD_DELAY)
            try:  # None: the deadline came first
                data: bytes | None = await receive_before(stream, RECEIVE_SIZE, deadline)
            except STREAM_ERRORS as e:
                self._lost(side, _reason(e))
                continue
            now = trio.current_time()
            if ends_at is not None and now >= ends_at:
                self.log.warning(
                    "session exceeded max_session_time (%gs); closed listener=%s client=%s",
                    self.env.max_session_time, self.env.listener, self.peer_ip,
                )  # fmt: skip
                core.timeout(side)
                continue
            if streaming and rate.too_slow(len(data or b""), now):
                self.log.warning(
                    "%s too slow while a message streamed: %d bytes in %.0fs "
                    "(min_data_rate %d B/s); closed listener=%s client=%s",
                    side.value, rate.last_bytes, rate.last_span, rate.min_rate,
                    self.env.listener, self.peer_ip,
                )  # fmt: skip
                core.timeout(side)
                continue
            if data is None:
                if self.held:
                    await self._send(Side.UPSTREAM, b"")  # held long enough
                if now < progress_at + limit:
                    continue  # only a rate window ended (and the rate was met): read on
                core.timeout(side)
            elif side is Side.CLIENT:
                first, self.client_spoke = not self.client_spoke, True
                if first and self.client_tls is None and tls_hints.looks_like_tls(data):
                    self.log.warning(
                        "%s listener=%s client=%s",
                        tls_hints.implicit_tls_on_plain_port(self.env.client_tls),
                        self.env.listener,
                        self.peer_ip,
                    )
                    return  # a ClientHello is no command: never relay it upstream
                core.receive_client(data)
            else:
                core.receive_upstream(data)

    def _lost(self, side: Side, reason: str) -> None:
        self.reported_lost.add(side)
        stream = self.client if side is Side.CLIENT else self.upstream
        if stream is not None:
            self.retired.append(stream)  # broken, but its socket still needs closing
        if side is Side.CLIENT:
            self.client = None
            self.core.client_lost()
        else:
            self.upstream = None
            self.core.upstream_lost(reason)

    # --- actions -------------------------------------------------------------------
    async def _perform_batch(self, batch: list[A.Action]) -> None:
        """Perform `batch` in order, except that a send to the client followed only by
        bookkeeping and a CommitMessage overlaps with the commit's disk write."""
        i, n = 0, len(batch)
        while i < n:
            action = batch[i]
            i += 1
            if type(action) is A.SendClient and (end := _commit_follows(batch, i)):
                for bookkeeping in batch[i : end - 1]:
                    await self._perform(bookkeeping)
                commit = batch[end - 1]
                assert isinstance(commit, A.CommitMessage)
                await self._send_committing(action.data, commit.outcome, commit.reply)
                i = end
            else:
                await self._perform(action)

    async def _send_committing(self, data: bytes, outcome: str, reply: str | None) -> None:
        """Send `data` to the client while the commit of the current message writes.

        A POP3 RETR's body (all of a small one, which arrives in one read) reaches the
        client while the journal record is on its way to the disk, and the terminator
        still waits for the barrier (DESIGN invariant 1). Sending to the client before or
        during the barrier is the same to the client: it gives no verdict. The order of
        the core's answers (client_lost before archive_result) stays as without it.
        """
        writer = self.writer
        ticket = None if writer is None else self.env.committer.begin(writer, outcome, reply)
        if ticket is None:
            await self._send(Side.CLIENT, data)
            await self._commit(outcome, reply)
            return
        try:
            await self._send(Side.CLIENT, data)
        finally:  # a begun commit is always finished (even under cancellation)
            await self._commit(outcome, reply, ticket)

    async def _perform(self, action: A.Action) -> None:  # noqa: C901 - one arm per action
        core = self.core
        match action:
            case A.SendClient(data):
                await self._send(Side.CLIENT, data)
            case A.SendUpstream(data):
                if self._hold(data):
                    return
                await self._send(Side.UPSTREAM, data)
            case A.StartTls(side):
                if await self._start_tls(side):
                    core.tls_started(
                        side,
                        (self.client_tls if side is Side.CLIENT else self.upstream_tls) or "",
                    )
            case A.BeginMessage(report):
                self.message_started = time.monotonic()
                self.writer = self.env.spool.open_message(self.env.protocol, self._report(report))
            case A.MessageData(data):
                if self.writer is not None:
                    self.writer.write(data)
            case A.CommitMessage(outcome, reply):
                await self._commit(outcome, reply)
            case A.AbortMessage():
                if self.writer is not None and not self.writer.committed:
                    self.writer.abort()
                    self.writer = None
            case A.RecordOutcome(outcome, reply):
                if self.writer is not None and self.writer.committed:
                    self.env.committer.record_outcome(self.writer, outcome, reply)
            case A.CloseUpstream():
                await self._send(Side.UPSTREAM, b"")  # what was relayed before, as before
                if self.upstream is not None:
                    await close_stream(self.upstream)
                    self.upstream = None
            case A.Close():
                self.done = True
            case A.LogTransaction(fields):
                self._log_transaction(fields)
            case A.LogEvent(level, message):
                self.log.log(
                    logging.getLevelName(level.upper()),
                    "%s listener=%s client=%s",
                    scrub_log(message),  # an upstream's text may echo an AUTH payload
                    self.env.listener,
                    self.peer_ip,
                )

    def _hold(self, data: bytes) -> bool:
        """Keep message bytes for the provider back (HOLD_BYTES); False: send now."""
        writer = self.writer
        if (
            self.env.protocol != "smtp"
            or writer is None
            or writer.committed
            or self.held_bytes + len(data) > HOLD_BYTES
        ):
            return False
        if not self.held:
            self.held_since = trio.current_time()
        self.held.append(data)
        self.held_bytes += len(data)
        return True

    async def _send(self, side: Side, data: bytes) -> None:
        if side is Side.UPSTREAM and self.held:  # held bytes go first, in one write
            data = b"".join(self.held) + data
            self.held.clear()
            self.held_bytes = 0
        stream = self.client if side is Side.CLIENT else self.upstream
        if stream is None or not data:
            return
        try:
            await stream.send_all(data)
        except STREAM_ERRORS as e:
            self._lost(side, _reason(e))

    async def _start_tls(self, side: Side, quiet: bool = False) -> bool:
        env = self.env
        if side is Side.CLIENT:
            stream, ctx, hostname = self.client, env.server_ctx, None
        else:
            stream, ctx, hostname = self.upstream, env.upstream_ctx, env.target_host
        if stream is None or ctx is None:
            self.core.tls_failed(side, "TLS is not configured")
            return False
        try:
            tls = await wrap(
                stream,
                ctx,
                server_side=side is Side.CLIENT,
                server_hostname=hostname,
                timeout=env.connect_timeout,
            )
        except (*STREAM_ERRORS, trio.TooSlowError) as e:
            reason = self.tls_error = _reason(e)
            if side is Side.CLIENT:
                self.client = None
                hint = tls_hints.handshake_hint(reason, env.client_tls)
                self.log.info(
                    "client TLS handshake failed: %s%s listener=%s client=%s",
                    reason,
                    f" ({hint})" if hint else "",
                    env.listener,
                    self.peer_ip,
                )
                self.done = True
                await trio.aclose_forcefully(stream)
            else:
                self.upstream = None
                await trio.aclose_forcefully(stream)
                if not quiet:
                    self.core.tls_failed(side, reason)
                else:
                    self.log.warning(
                        "TLS with the provider failed: %s listener=%s", reason, env.listener
                    )
            return False
        if side is Side.CLIENT:
            self.client, self.client_tls = tls, tls.version()
        else:
            self.upstream, self.upstream_tls = tls, tls.version()
        return True

    async def _commit(self, outcome: str, reply: str | None, ticket: Commit | None = None) -> None:
        writer = self.writer
        if writer is None:
            self.core.archive_result(False, "no message file")
            return
        try:
            # returns once the group barrier covering this message has completed
            if ticket is None:
                await self.env.committer.commit(writer, outcome, reply)
            else:
                await self.env.committer.finish(ticket)
        except SpoolError as e:
            self.env.stats.archive_failed(str(e))
            self.core.archive_result(False, str(e))
            return
        self.core.archive_result(True)

    def _report(self, start: MessageStart) -> SessionReport:
        env = self.env
        return SessionReport(
            listener=env.listener,
            client=ClientSection(self.peer_ip, self.peer_port, self.client_tls),
            target=TargetSection(env.target_host, env.target_port, self.upstream_tls),
            start=start,
        )

    def _log_transaction(self, fields: dict[str, Any]) -> None:
        duration = time.monotonic() - self.message_started if self.message_started else 0.0
        parts = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items() if k != "protocol")
        self.log.info(
            "%s transaction listener=%s client=%s %s duration=%.3fs",
            fields.get("protocol", self.env.protocol),
            self.env.listener,
            self.peer_ip,
            parts,
            duration,
        )


class _RateWindow:
    """min_data_rate bookkeeping for the side a message streams from."""

    def __init__(self, min_rate: int) -> None:
        self.min_rate = min_rate
        self._side: Side | None = None
        self._start = 0.0
        self._bytes = 0
        self.last_bytes = 0
        self.last_span = 0.0

    def deadline(self, streaming: bool, side: Side) -> float:
        """When the current window ends (inf when no minimum applies right now)."""
        if not streaming or not self.min_rate:
            self._side = None
            return float("inf")
        if self._side is not side:
            self._side, self._start, self._bytes = side, trio.current_time(), 0
        return self._start + DATA_RATE_WINDOW

    def too_slow(self, received: int, now: float) -> bool:
        """Count `received`; at the end of a window, judge it and start the next one."""
        if self._side is None:
            return False
        self._bytes += received
        span = now - self._start
        if span < DATA_RATE_WINDOW:
            return False
        slow = self._bytes < self.min_rate * span
        self.last_bytes, self.last_span = self._bytes, span
        self._start, self._bytes = now, 0
        return slow


def coalesce(batch: list[A.Action]) -> list[A.Action]:
    """Merge runs of sends to the same side: one write per pipelined group, not per line.

    A send to the client also merges with an earlier one across the copy's bookkeeping
    (BeginMessage, MessageData: no I/O, no reply), so a POP3 RETR's status line and the
    first body bytes leave in one write. Never across anything else: a CommitMessage
    stays between the body and the end of the message (DESIGN invariant 1), and sends
    to the provider keep their place (the session holds message bytes back by the
    writer BeginMessage opens).
    """
    out: list[A.Action] = []
    client_send = -1  # index in `out` of a SendClient only bookkeeping follows
    for action in batch:
        prev = out[-1] if out else None
        if isinstance(action, A.SendUpstream) and isinstance(prev, A.SendUpstream):
            out[-1] = A.SendUpstream(prev.data + action.data)
            continue
        if isinstance(action, A.SendClient) and client_send >= 0:
            earlier = out[client_send]
            assert isinstance(earlier, A.SendClient)
            out[client_send] = A.SendClient(earlier.data + action.data)
            continue
        out.append(action)
        if isinstance(action, A.SendClient):
            client_send = len(out) - 1
        elif not isinstance(action, A.BeginMessage | A.MessageData):
            client_send = -1
    return out


#: what may stand between a send to the client and a CommitMessage (no I/O, no reply)
_BOOKKEEPING = (A.BeginMessage, A.MessageData)


def _commit_follows(batch: list[A.Action], start: int) -> int:
    """The index after a CommitMessage that `batch[start:]` reaches through bookkeeping
    only; 0 when something else comes first."""
    for i in range(start, len(batch)):
        action = batch[i]
        if type(action) is A.CommitMessage:
            return i + 1
        if not isinstance(action, _BOOKKEEPING):
            return 0
    return 0


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return f"<{text}>" if isinstance(value, str) and "@" in text else text.replace(" ", "_")


def _reason(e: BaseException) -> str:
    if isinstance(e, trio.BrokenResourceError) and e.__cause__ is not None:
        e = e.__cause__  # trio wraps the SSLError ("certificate verify failed", ...)
    if isinstance(e, trio.TooSlowError):
        return "timed out"
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return type(e).__name__
