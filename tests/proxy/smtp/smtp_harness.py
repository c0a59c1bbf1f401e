"""Drive an `SmtpRelay` with byte strings, the way `proxy.session` drives it.

`Driver` plays the session: it reads the side the core names in `reading`, answers
`StartTls` with `tls_started` and `CommitMessage` with `archive_result` synchronously,
and records every action. Client input is a list of chunks (clients pipeline); upstream
input is either scripted (a list of chunks) or produced by `FakeUpstream`, a tiny SMTP
server that answers whatever the core sent it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
from proxy.replay import (  # noqa: F401 - the harness API the tests import
    FRAMING_TOKENS,
    SIGNALS,
    ArchiveAnswer,
    Replayer,
    apply_event,
    chunked,
    message_data,
    of_type,
    reports,
    to_client,
    to_upstream,
)
from proxy.settings import RelaySettings
from proxy.smtp.relay import SmtpRelay, State

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


class Driver(Replayer):
    """Plays `proxy.session` against a relay core, recording every action; with a
    `FakeUpstream`, everything sent upstream is fed to it."""

    def __init__(
        self,
        relay: SmtpRelay,
        *,
        archive_ok: bool = True,
        upstream: FakeUpstream | None = None,
        markers: bool = False,
        archive_verdicts: Sequence[bool] = (),
        tls_verdicts: Sequence[bool] = (),
    ) -> None:
        super().__init__(
            relay,
            archive_ok=archive_ok,
            markers=markers,
            archive_verdicts=list(archive_verdicts),
            tls_verdicts=list(tls_verdicts),
            on_upstream=upstream.feed if upstream is not None else None,
        )
        self.upstream = upstream

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


# --- invariants shared by the property tests and fuzz/smtp_core.py ------------------------
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
                # The AUTH verb (RFC 5321 verbs end at a space or CRLF): an unknown verb
                # that merely starts with the letters, e.g. "AUTHDATA", is relayed like
                # any unknown verb (it carries no SASL exchange).
                verb = a.data.split(None, 1)[0].upper() if a.data.strip() else b""
                assert verb != b"AUTH", f"{a} before client TLS"
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
    *FRAMING_TOKENS,
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


def fuzz_driver(relay: SmtpRelay, verdicts: Sequence[bool], tls_ok: Sequence[bool]) -> Driver:
    """Answers StartTls with success or failure and CommitMessage with given verdicts."""
    return Driver(relay, markers=True, archive_verdicts=verdicts, tls_verdicts=tls_ok)


def run_events(
    settings: dict[str, object],
    events: Sequence[tuple[str, bytes]],
    verdicts: Sequence[bool] = (),
    tls_ok: Sequence[bool] = (),
    *,
    bytewise: bool = False,
    check_each: bool = True,
) -> Driver:
    """Play random events against a fresh core, checking the invariants after each one
    (`check_each=False`: the full check only at the end, which sees the same log)."""
    driver = fuzz_driver(make_relay(**settings), verdicts, tls_ok)
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
        # The phase and the driver's view of it agree (the state machine's CLOSED is final).
        assert (driver.relay.state is State.CLOSED) == (driver.relay.reading is None)
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
