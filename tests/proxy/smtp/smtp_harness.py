"""Drive an `SmtpRelay` with byte strings, the way `proxy.session` drives it.

`Driver` plays the session: it reads the side the core names in `reading`, answers
`StartTls` with `tls_started` and `CommitMessage` with `archive_result` synchronously,
and records every action. Client input is a list of chunks (clients pipeline); upstream
input is either scripted (a list of chunks) or produced by `FakeUpstream`, a tiny SMTP
server that answers whatever the core sent it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from proxy.actions import (
    AbortMessage,
    Action,
    BeginMessage,
    Close,
    CloseUpstream,
    CommitMessage,
    LogEvent,
    LogTransaction,
    MessageData,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)
from proxy.settings import RelaySettings
from proxy.smtp.relay import SmtpRelay

GREETING = b"220 smtp.example.net ESMTP Postfix\r\n"
EHLO_REPLY = (
    b"250-smtp.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
    b"250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 BINARYMIME\r\n"
)
OK = b"250 2.0.0 Ok\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = b"250 2.0.0 Ok: queued as 4F1\r\n"
BYE = b"221 2.0.0 Bye\r\n"


def make_relay(**settings: object) -> SmtpRelay:
    relay = SmtpRelay(RelaySettings(**settings))  # type: ignore[arg-type]
    relay.start()
    return relay


def to_client(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def to_upstream(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendUpstream))


def message_data(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, MessageData))


def of_type(actions: Iterable[Action], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def kinds(actions: Iterable[Action]) -> list[str]:
    """Action type names with byte actions merged (for order assertions)."""
    out: list[str] = []
    for a in actions:
        name = type(a).__name__
        if name in ("SendClient", "SendUpstream", "MessageData", "LogEvent") and out:
            if out[-1] == name:
                continue
        out.append(name)
    return out


def log_text(actions: Iterable[Action]) -> str:
    """Everything the core asked to log, as text (for secret-leak checks)."""
    parts = []
    for a in actions:
        if isinstance(a, LogEvent):
            parts.append(a.message)
        elif isinstance(a, LogTransaction):
            parts.append(repr(a.fields))
        elif isinstance(a, BeginMessage):
            parts.append(repr(a.report))
    return "\n".join(parts)


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Split `data` at the given offsets (out-of-range and duplicate cuts ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2 dot-stuffing of a CRLF-terminated (or empty) message."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)


class FakeUpstream:
    """A minimal pipelining SMTP server: 250 to everything, 354 to DATA, queued after."""

    def __init__(self, *, ehlo: bytes = EHLO_REPLY, greeting: bytes = GREETING) -> None:
        self.ehlo = ehlo
        self.received = bytearray()
        self.pending = bytearray(greeting)
        self._buf = bytearray()
        self._in_data = False

    def feed(self, data: bytes) -> None:
        self.received += data
        self._buf += data
        while True:
            if self._in_data:
                end = self._buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                del self._buf[: end + 5]
                self._in_data = False
                self.pending += QUEUED
                continue
            nl = self._buf.find(b"\n")
            if nl < 0:
                return
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            verb = line.split(None, 1)[0].upper() if line.strip() else b""
            if verb == b"EHLO":
                self.pending += self.ehlo
            elif verb == b"DATA":
                self.pending += GO_AHEAD
                self._in_data = True
                # the CRLF ending DATA starts the body: ".\r\n" alone ends it
                self._buf[:0] = b"\r\n"
            elif verb == b"QUIT":
                self.pending += BYE
            elif verb == b"RSET" or verb == b"NOOP":
                self.pending += OK
            else:
                self.pending += b"250 2.1.0 Ok\r\n"

    def take(self) -> bytes:
        out = bytes(self.pending)
        self.pending.clear()
        return out


@dataclass
class Driver:
    """Plays `proxy.session` against a relay core, recording every action."""

    relay: SmtpRelay
    archive_ok: bool = True
    archive_error: str = "cannot write message file: No space left on device"
    upstream: FakeUpstream | None = None
    log: list[Action] = field(default_factory=list)
    commits: int = 0

    #: also record ArchiveAnswer markers in `log` (for check_invariants)
    markers: bool = False

    def drain(self) -> list[Action]:
        new: list[Action] = []
        while acts := self.relay.actions():
            answered = False
            for a in acts:
                new.append(a)
                if isinstance(a, SendUpstream) and self.upstream is not None:
                    self.upstream.feed(a.data)
                elif isinstance(a, StartTls):
                    self.relay.tls_started(a.side, "TLSv1.3")
                elif isinstance(a, CommitMessage):
                    self.commits += 1
                    error = None if self.archive_ok else self.archive_error
                    self.relay.archive_result(self.archive_ok, error)
                    answered = True
            if answered and self.markers:
                new.append(ArchiveAnswer(self.archive_ok))  # type: ignore[arg-type]
        self.log += new
        return new

    def run(
        self,
        client: Sequence[bytes],
        upstream: Sequence[bytes] = (),
        *,
        upstream_chunk: int | None = None,
    ) -> list[Action]:
        """Feed client chunks and upstream chunks as `reading` asks; all actions so far.

        With a `FakeUpstream`, upstream bytes are whatever it has to say (cut into
        `upstream_chunk`-sized reads if given) and `upstream` is ignored.
        """
        client_q = [c for c in client if c]
        upstream_q = [c for c in upstream if c]
        self.drain()
        while self.relay.reading is not None:
            if self.relay.reading is Side.CLIENT:
                if not client_q:
                    break
                self.relay.receive_client(client_q.pop(0))
            else:
                if self.upstream is not None:
                    if not self.upstream.pending:
                        break
                    data = self.upstream.take()
                    if upstream_chunk:
                        self.upstream.pending[:0] = data[upstream_chunk:]
                        data = data[:upstream_chunk]
                    self.relay.receive_upstream(data)
                else:
                    if not upstream_q:
                        break
                    self.relay.receive_upstream(upstream_q.pop(0))
            self.drain()
        return self.log

    @property
    def closed(self) -> bool:
        return any(isinstance(a, Close) for a in self.log)


def drive(
    client: Sequence[bytes],
    upstream: Sequence[bytes],
    *,
    archive_ok: bool = True,
    **settings: object,
) -> list[Action]:
    """A fresh relay driven with scripted upstream chunks (one list, in order)."""
    driver = Driver(make_relay(**settings), archive_ok=archive_ok)
    return driver.run(client, upstream)


def session(
    client: Sequence[bytes], *, archive_ok: bool = True, **settings: object
) -> tuple[Driver, list[Action]]:
    """A fresh relay against a `FakeUpstream`."""
    driver = Driver(make_relay(**settings), archive_ok=archive_ok, upstream=FakeUpstream())
    return driver, driver.run(client)


def reports(actions: Iterable[Action]) -> list[dict[str, object]]:
    return [a.report for a in actions if isinstance(a, BeginMessage)]


# --- invariants shared by the property tests and fuzz/smtp_core.py ------------------------
@dataclass(frozen=True)
class ArchiveAnswer:
    """Marker in a fuzz log: the driver answered CommitMessage with archive_result(ok)."""

    ok: bool


def check_invariants(
    log: Sequence[object],
    relay: SmtpRelay,
    pass_mode: bool,
    settings: dict[str, object] | None = None,
) -> None:
    """What must hold for any input whatsoever (DESIGN invariants 1 and 3).

    `log` holds the actions in the order the driver performed them, with an
    `ArchiveAnswer` marker after the batch in which the driver answered a CommitMessage.

    - reading is None exactly when the core emitted Close; no bytes move after Close;
    - for every message: the bytes relayed upstream after BeginMessage never contain an
      end-of-data; once committed they hold no bare CR/LF, end with CRLF, and the archive
      copy is exactly their unstuffing;
    - after CommitMessage nothing goes upstream until the driver answered; then the first
      thing upstream is the final ".\\r\\n", and only if the copy is durable (or pass mode);
    - with target_tls=starttls only the proxy's own EHLO and STARTTLS precede TLS upstream;
      on a STARTTLS listener the client's AUTH is never relayed before TLS with the client.
    """
    settings = settings or {}
    upstream_tls = settings.get("target_tls") != "starttls"
    client_tls = settings.get("client_tls") != "starttls" or bool(settings.get("target_user"))
    hostname = settings.get("hostname", "mailtee.localdomain")
    setup = {b"EHLO " + str(hostname).encode() + b"\r\n", b"STARTTLS\r\n"}
    closes = [i for i, a in enumerate(log) if isinstance(a, Close)]
    assert len(closes) <= 1, "Close twice"
    assert (relay.reading is None) == bool(closes), (relay.reading, closes)
    wire: bytearray | None = None
    copy = bytearray()
    dot: str | None = None  # None | "waiting" | "allowed" | "forbidden"
    for i, a in enumerate(log):
        if closes and i > closes[0]:
            assert not isinstance(a, SendClient | SendUpstream | StartTls | BeginMessage), a
        if isinstance(a, StartTls):
            if a.side is Side.UPSTREAM:
                upstream_tls = True
            else:
                client_tls = True
        if isinstance(a, SendUpstream):
            assert upstream_tls or a.data in setup, f"{a} before TLS with the provider"
            if wire is None and not client_tls:
                assert not a.data[:5].upper().startswith(b"AUTH"), f"{a} before client TLS"
        if isinstance(a, ArchiveAnswer):
            if dot == "waiting":
                dot = "allowed" if a.ok or pass_mode else "forbidden"
        elif isinstance(a, SendUpstream):
            assert dot not in ("waiting", "forbidden"), f"{a} before/without a durable copy"
            if dot == "allowed":
                assert a.data == b".\r\n", a
                dot = None
            elif wire is not None:
                wire += a.data
                assert TERMINATOR not in b"\r\n" + wire, "end-of-data relayed early"
        elif isinstance(a, BeginMessage):
            assert wire is None, "BeginMessage inside a message"
            wire, copy, dot = bytearray(), bytearray(), None
        elif isinstance(a, MessageData):
            assert wire is not None
            copy += a.data
        elif isinstance(a, CommitMessage):
            assert wire is not None, "CommitMessage outside a message"
            w = bytes(wire)
            assert w == b"" or w.endswith(b"\r\n")
            assert w.count(b"\n") == w.count(b"\r\n") == w.count(b"\r"), "bare CR/LF relayed"
            assert (b"\r\n" + w).replace(b"\r\n.", b"\r\n")[2:] == bytes(copy)
            wire, dot = None, "waiting"
        elif isinstance(a, AbortMessage | Close):
            wire = None


TERMINATOR = b"\r\n.\r\n"


# --- random sessions (test_smtp_properties.py and fuzz/smtp_core.py) -----------------------
CLIENT_TOKENS = [
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<a@b> SIZE=99999\r\n",
    b"RCPT TO:<c@d>\r\n",
    b"DATA\r\n",
    b"BDAT 5 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN AGEAYg==\r\n",
    b"AUTH LOGIN\r\n",
    b"YQ==\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"x" * 80,
    b"*\r\n",
    b"\x00\xff",
    b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
    b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\r\n..x\r\n.\r\n",
]
UPSTREAM_TOKENS = [
    b"220 hi\r\n",
    b"220-a\r\n",
    b"250 ok\r\n",
    b"250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN PLAIN\r\n",
    b"250-mx\r\n250 SIZE 10\r\n",
    b"354 go\r\n",
    b"334 VXNlcm5hbWU6\r\n",
    b"334 \r\n",
    b"235 ok\r\n",
    b"221 bye\r\n",
    b"421 bye\r\n",
    b"550 no\r\n",
    b"550-no\r\n",
    b"999 x\r\n",
    b"hello\r\n",
    b"\r\n",
    b"\n",
    b"2",
    b"9" * 80,
    b"250 ok\r\n250 ok\r\n354 go\r\n",
    b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n",
]
#: events without bytes
SIGNALS = ["upstream_lost", "client_lost", "timeout_client", "timeout_upstream", "eof"]


class FuzzDriver(Driver):
    """Answers StartTls with success or failure and CommitMessage with given verdicts."""

    def __init__(self, relay: SmtpRelay, verdicts: list[bool], tls_ok: list[bool]) -> None:
        super().__init__(relay, markers=True)
        self.verdicts, self.tls_ok = list(verdicts), list(tls_ok)

    def drain(self) -> list[Action]:
        new: list[Action] = []
        while acts := self.relay.actions():
            answers: list[object] = []
            for a in acts:
                new.append(a)
                if isinstance(a, StartTls):
                    if self.tls_ok.pop(0) if self.tls_ok else True:
                        self.relay.tls_started(a.side, "TLSv1.3")
                    else:
                        self.relay.tls_failed(a.side, "handshake failed")
                elif isinstance(a, CommitMessage):
                    ok = self.verdicts.pop(0) if self.verdicts else True
                    self.relay.archive_result(ok, None if ok else "disk full")
                    answers.append(ArchiveAnswer(ok))
            new += answers  # type: ignore[arg-type]
        self.log += new
        return new


def apply_event(relay: SmtpRelay, kind: str, data: bytes) -> None:
    if kind == "client":
        relay.receive_client(data)
    elif kind == "upstream":
        relay.receive_upstream(data)
    elif kind == "next":  # what a real driver does: read the side the core names
        if relay.reading is Side.CLIENT:
            relay.receive_client(data)
        elif relay.reading is Side.UPSTREAM:
            relay.receive_upstream(data)
    elif kind == "upstream_lost":
        relay.upstream_lost("reset")
    elif kind == "client_lost":
        relay.client_lost()
    elif kind == "timeout_client":
        relay.timeout(Side.CLIENT)
    elif kind == "timeout_upstream":
        relay.timeout(Side.UPSTREAM)
    elif kind == "eof":
        (relay.receive_client if relay.reading is Side.CLIENT else relay.receive_upstream)(b"")
    else:
        raise ValueError(kind)


def run_events(
    settings: dict[str, object],
    events: Sequence[tuple[str, bytes]],
    verdicts: Sequence[bool] = (),
    tls_ok: Sequence[bool] = (),
    *,
    bytewise: bool = False,
    check_each: bool = True,
) -> FuzzDriver:
    """Play random events against a fresh core, checking the invariants after each one
    (`check_each=False`: the full check only at the end, which sees the same log)."""
    driver = FuzzDriver(make_relay(**settings), list(verdicts), list(tls_ok))
    pass_mode = settings.get("on_archive_failure") == "pass"
    driver.drain()
    upstream_gone = False
    for kind, data in events:
        if kind in ("upstream_lost", "timeout_upstream") or (
            kind == "eof" and driver.relay.reading is Side.UPSTREAM
        ):
            upstream_gone = True
        pieces = [data[i : i + 1] for i in range(len(data))] if bytewise and data else [data]
        for piece in pieces:
            apply_event(driver.relay, kind, piece)
            driver.drain()
        if check_each:
            check_invariants(driver.log, driver.relay, pass_mode, dict(settings))
        else:
            assert (driver.relay.reading is None) == any(isinstance(a, Close) for a in driver.log)
        # Once the provider is gone the core must never wait for it (a driver would spin).
        upstream_gone = upstream_gone or any(isinstance(a, CloseUpstream) for a in driver.log)
        if upstream_gone:
            assert driver.relay.reading is not Side.UPSTREAM, "waiting for a lost provider"
    # Whatever happened, the session can always be ended cleanly.
    driver.relay.client_lost()
    driver.drain()
    check_invariants(driver.log, driver.relay, pass_mode, dict(settings))
    assert driver.relay.reading is None
    assert sum(isinstance(a, Close) for a in driver.log) == 1
    assert driver.relay.actions() == []
    return driver
