"""`Pop3Relay`: the sans-IO core of one proxied POP3 session.

Theory of operation. The relay sits between a POP3 client and the provider and keeps the
two in lockstep: it reads the client only while no upstream answer is outstanding, so
exactly one command is upstream at a time and every upstream byte belongs to the answer
being awaited -- anything else is unsolicited and ends the session. Commands the client
pipelines wait in the client buffer for their turn.

    GREETING --(+OK; target_tls=starttls)--> UPSTREAM_STLS --> UPSTREAM_TLS --+
        |                                                                      |
        +--(+OK)---------------------------------------------------------------+--> IDLE
    IDLE --client line--> REPLY --+OK, multi-line--> MULTILINE --RETR--> ARCHIVING --> IDLE
      |                     |<-- "+ " (AUTH) --> IDLE (next client line is a SASL response)
      +--STLS--> CLIENT_TLS --> IDLE              any state --> CLOSED

`_TRANSITIONS` holds these edges (plus REPLY -> REPLY for the relay's own lookups), and
`_enter` refuses any other as a LocalProtocolError.

Replies are relayed verbatim except CAPA (capa.py). The relay answers STLS itself and
never relays it (RFC 2595): TLS is terminated on each side separately, and a client that
sends anything after STLS before the handshake is trying command injection
(CVE-2011-0411), so the session ends. For RETR the relay learns the message's unique-id
first (asking `UIDL n` itself when the session has not listed it), streams the message to
the client and into the copy, and holds back the final ".\\r\\n" until the driver reports
the copy durable: a client that has not seen the end of a message never DELEs it
(DESIGN invariant 1). If the copy fails the connection is dropped (fail closed) unless
`on_archive_failure = "pass"`. A TOP is captured the same way and archived when it
turns out to be the whole message (top.py); the relay asks `LIST n` (and `UIDL n`)
itself first when it does not know the message's size. Command lines with control bytes
(NUL, ...) are refused, never relayed: the server might read a different command than
the one classified here. Limits come from `RelaySettings`; see limits.py.

Peer misbehaviour never raises out of this class: it becomes a log event and `Close`.
`LocalProtocolError` is raised only when the driver breaks the calling contract.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from archive.report_sections import MessageStart, Pop3Section
from proxy.actions import (
    AbortMessage,
    Action,
    BeginMessage,
    CommitMessage,
    LogEvent,
    LogTransaction,
    MessageData,
    RelayCore,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)
from proxy.buffer import LineBuffer, LineTooLong, has_control_bytes, is_crlf_line
from proxy.core_common import CoreCommon
from proxy.errors import LocalProtocolError, RemoteProtocolError
from proxy.pop3 import replies
from proxy.pop3.capa import CapaRewriter
from proxy.pop3.commands import (
    MULTILINE_KINDS,
    SINGLE_LINE_VERBS,
    Command,
    Kind,
    classify,
    size_pair,
    uidl_pair,
)
from proxy.pop3.limits import (
    CONTINUATION,
    END_LINE,
    ERR,
    OK,
    SASL_LINE_MAX,
    TOP_HOLD_MAX,
    UIDL_CACHE_MAX,
)
from proxy.pop3.multiline import MultilineReader
from proxy.pop3.top import TopWatch
from proxy.settings import RelaySettings


class State(enum.Enum):
    NEW = "new"
    GREETING = "greeting"
    UPSTREAM_STLS = "upstream-stls"
    UPSTREAM_TLS = "upstream-tls"
    IDLE = "idle"
    REPLY = "reply"
    MULTILINE = "multiline"
    CLIENT_TLS = "client-tls"
    ARCHIVING = "archiving"
    CLOSED = "closed"


#: Every state change the relay makes, in one place (the diagram above): `_enter` refuses
#: any other, so a change to the code that would reach a state by a new path fails loudly
#: in the tests instead of relaying in a state nobody reasoned about. REPLY -> REPLY is
#: the relay's own command sent in place of an answer (UIDL n / LIST n lookups, the NOOP
#: probe after a single-line reply); every state can close.
_TRANSITIONS: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.GREETING}),
    State.GREETING: frozenset({State.UPSTREAM_STLS, State.IDLE}),
    State.UPSTREAM_STLS: frozenset({State.UPSTREAM_TLS}),
    State.UPSTREAM_TLS: frozenset({State.IDLE}),
    State.IDLE: frozenset({State.REPLY, State.CLIENT_TLS}),
    State.REPLY: frozenset({State.REPLY, State.MULTILINE, State.IDLE}),
    State.MULTILINE: frozenset({State.ARCHIVING, State.IDLE}),
    State.CLIENT_TLS: frozenset({State.IDLE}),
    State.ARCHIVING: frozenset({State.IDLE}),
    State.CLOSED: frozenset(),
}

#: Where the driver reads next in each state (answers to StartTls/CommitMessage come
#: first: the driver gives them synchronously before it reads again).
_READING = {
    State.NEW: Side.UPSTREAM,
    State.GREETING: Side.UPSTREAM,
    State.UPSTREAM_STLS: Side.UPSTREAM,
    State.UPSTREAM_TLS: Side.UPSTREAM,
    State.REPLY: Side.UPSTREAM,
    State.MULTILINE: Side.UPSTREAM,
    State.IDLE: Side.CLIENT,
    State.CLIENT_TLS: Side.CLIENT,
    State.ARCHIVING: Side.CLIENT,
    State.CLOSED: None,
}

#: States in which the client is waiting for a status line nobody has sent it yet.
_CLIENT_AWAITS_STATUS = frozenset(
    {State.GREETING, State.UPSTREAM_STLS, State.UPSTREAM_TLS, State.REPLY}
)


class UpstreamViolation(RemoteProtocolError):
    """The upstream broke the protocol; the session ends."""


class ClientViolation(RemoteProtocolError):
    """The client broke the protocol in a way a local -ERR cannot repair."""


def _status(line: bytes) -> bytes | None:
    """OK or ERR for a well-formed status line (RFC 1939 section 3), else None."""
    if not is_crlf_line(line):
        return None
    for indicator in (OK, ERR):
        if line.startswith(indicator) and line[len(indicator) : len(indicator) + 1] in b" \r":
            return indicator
    return None


def _is_continuation(line: bytes) -> bool:
    return is_crlf_line(line) and (line.startswith(CONTINUATION) or line == b"+\r\n")


def _text(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", "replace")


class Pop3Relay(RelayCore):
    def __init__(self, settings: RelaySettings) -> None:
        self._settings = settings
        self._common = CoreCommon(settings)
        self._state = State.NEW
        self.reading: Side | None = Side.UPSTREAM
        self._client = LineBuffer()
        self._upstream = LineBuffer()
        self._client_on_tls = settings.client_tls == "implicit"
        self._discarding = False  # dropping the rest of an over-long client line
        self._greeting = b""
        self._pending: Command | None = None  # the command whose answer is awaited
        self._after_uidl: Command | None = None  # the RETR/TOP waiting for our own lookups
        self._lookups: list[Command] = []  # our own LIST n / UIDL n still to send first
        self._sasl_open = False  # the next client line is a SASL response
        self._user_candidate: str | None = None
        self.account: str | None = None
        self.authenticated = False
        self._uidls: dict[int, str] = {}
        self._sizes: dict[int, int] = {}  # message number -> LIST size (for TOP)
        self._body: MultilineReader | None = None
        self._capa: CapaRewriter | None = None
        self._uidl_lines: LineBuffer | None = None
        self._list_lines: LineBuffer | None = None
        self._message: dict[str, Any] | None = None  # the RETR (or TOP) being copied
        self._top: TopWatch | None = None  # the TOP response being watched
        self._top_held: bytearray | None = None  # its data while not yet spooled
        self._top_report: dict[str, Any] = {}
        self._status_line = ""  # its +OK line, the report's upstream reply

    @property
    def settings(self) -> RelaySettings:
        return self._settings

    # --- the RelayCore interface --------------------------------------------------------

    def actions(self) -> list[Action]:
        return self._common.take()

    def start(self) -> None:
        if self._state is not State.NEW:
            raise LocalProtocolError("start() called twice")
        self._enter(State.GREETING)
        self._pump()

    def upstream_unavailable(self, reason: str) -> None:
        if self._common.closed:
            return
        self._emit(LogEvent("error", f"pop3 upstream unavailable: {reason}"))
        self._send_client(replies.UPSTREAM_UNAVAILABLE)
        self._close()

    def receive_client(self, data: bytes) -> None:
        if self._common.closed:
            return
        if not data:
            # Client hung up. No QUIT goes upstream: the provider must not enter the
            # UPDATE state (RFC 1939 section 6) and delete what the client marked.
            self._abort_message()
            self._close()
            return
        self._client.feed(data)
        self._pump()

    def receive_upstream(self, data: bytes) -> None:
        if self._common.closed:
            return
        if not data:
            self.upstream_lost("upstream closed the connection")
            return
        if self._state is State.MULTILINE:
            self._guarded(self._feed_body, data)
        else:
            self._upstream.feed(data)
        self._pump()

    def tls_started(self, side: Side, version: str) -> None:
        if self._common.closed:
            return
        if side is Side.UPSTREAM and self._state is State.UPSTREAM_TLS:
            self._send_client(self._greeting)
            self._enter(State.IDLE)
        elif side is Side.CLIENT and self._state is State.CLIENT_TLS:
            self._client_on_tls = True
            self._enter(State.IDLE)
        else:
            raise LocalProtocolError(f"tls_started({side.value}) in state {self._state.value}")
        self._pump()

    def tls_failed(self, side: Side, reason: str) -> None:
        if self._common.closed:
            return
        if side is Side.UPSTREAM and self._state is State.UPSTREAM_TLS:
            self._emit(LogEvent("error", f"pop3 upstream TLS failed: {reason}"))
            self._send_client(replies.UPSTREAM_TLS_FAILED)
        elif side is Side.CLIENT and self._state is State.CLIENT_TLS:
            self._emit(LogEvent("warning", f"pop3 client TLS failed: {reason}"))
        else:
            raise LocalProtocolError(f"tls_failed({side.value}) in state {self._state.value}")
        self._close()

    def archive_result(self, ok: bool, error: str | None = None) -> None:
        if self._common.closed:
            return
        if self._state is not State.ARCHIVING or self._message is None:
            raise LocalProtocolError("archive_result() without CommitMessage")
        message, self._message = self._message, None
        fields = {"protocol": "pop3", **message, "outcome": "delivered", "archived": ok}
        if ok or self._common.archive_failed(
            f"pop3 message {message['msg']} NOT archived ({error}); "
            "relayed anyway (on_archive_failure = pass)",
            f"pop3 message {message['msg']} not archived ({error}); "
            "client connection dropped before the end of the message",
        ):
            self._send_client(END_LINE)
        else:
            self._emit(LogTransaction({**fields, "outcome": "dropped"}))
            self._close()
            return
        self._emit(LogTransaction(fields))
        self._enter(State.IDLE)
        self._pump()

    def upstream_lost(self, reason: str = "connection lost") -> None:
        if self._common.closed:
            return
        self._emit(LogEvent("warning", f"pop3 upstream lost: {reason}"))
        if self._state in _CLIENT_AWAITS_STATUS:
            self._send_client(replies.UPSTREAM_LOST)
        self._abort_message()
        self._close()

    def client_lost(self) -> None:
        if self._common.closed:
            return
        self._abort_message()
        self._close()

    def timeout(self, side: Side) -> None:
        if self._common.closed:
            return
        if side is Side.CLIENT:
            self._send_client(replies.IDLE_TIMEOUT)
        else:
            self._emit(LogEvent("warning", "pop3 upstream timed out"))
            if self._state in _CLIENT_AWAITS_STATUS:
                self._send_client(replies.UPSTREAM_TIMEOUT)
            self._abort_message()
        self._close()

    # --- plumbing -----------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._common.emit(action)

    def _send_client(self, data: bytes) -> None:
        if data:
            self._common.emit(SendClient(data))

    def _enter(self, state: State) -> None:
        if state is not State.CLOSED and state not in _TRANSITIONS[self._state]:
            raise LocalProtocolError(f"no transition {self._state.value} -> {state.value}")
        self._state = state
        self.reading = _READING[state]

    def _close(self) -> None:
        self._common.close()
        self._enter(State.CLOSED)
        self._body = self._capa = self._uidl_lines = self._list_lines = None
        self._top = self._top_held = None

    def _abort_message(self) -> None:
        if self._message is not None and self._state is not State.ARCHIVING:
            self._emit(AbortMessage())
            self._emit(
                LogTransaction(
                    {"protocol": "pop3", **self._message, "outcome": "unknown", "archived": False}
                )
            )
        self._message = None

    def _guarded(self, step: Callable[..., None], *args: Any) -> bool:
        """Run one step; turn a peer's violation into a log line and Close. True if ran."""
        try:
            step(*args)
            return True
        except ClientViolation as e:
            self._emit(LogEvent("warning", f"pop3 client: {e}; session closed"))
        except RemoteProtocolError as e:  # the upstream's (UpstreamViolation, LineTooLong)
            self._emit(LogEvent("error", f"pop3 upstream protocol violation: {e}"))
            if self._state in _CLIENT_AWAITS_STATUS:
                self._send_client(replies.UPSTREAM_PROTOCOL)
        self._abort_message()
        self._close()
        return False

    def _pump(self) -> None:
        """Make all the progress the buffered input allows."""
        while self._state is not State.CLOSED:
            state = self._state
            if state in (State.GREETING, State.UPSTREAM_STLS, State.REPLY):
                line = self._upstream_status_line()
                if line is None or not self._guarded(self._on_upstream_line, line):
                    return
            elif state is State.MULTILINE and len(self._upstream):
                self._guarded(self._feed_body, self._upstream.take_all())
            elif state is State.IDLE:
                if len(self._upstream):
                    self._guarded(self._raise, UpstreamViolation("unsolicited data"))
                    return
                if not self._next_client_line():
                    return
            else:
                return

    @staticmethod
    def _raise(error: Exception) -> None:
        raise error

    def _upstream_status_line(self) -> bytes | None:
        try:
            return self._upstream.take_line(self._settings.max_line_length)
        except LineTooLong as e:
            self._guarded(self._raise, UpstreamViolation(f"status line: {e}"))
            return None

    # --- the client side ----------------------------------------------------------------

    def _next_client_line(self) -> bool:
        """Handle one client line if a complete one is buffered; True if progress."""
        limit = self._settings.max_line_length
        if self._sasl_open:
            limit = max(limit, SASL_LINE_MAX)
        if self._discarding:
            if not self._client.discard_line():
                return False
            self._discarding = False
        try:
            line = self._client.take_line(limit)
        except LineTooLong:
            if self._sasl_open:
                self._guarded(self._raise, ClientViolation("SASL response too long"))
            else:
                self._discarding = True
                self._guarded(self._too_long)
            return True
        if line is None:
            return False
        if self._sasl_open:
            return self._guarded(self._on_sasl_line, line)
        self._guarded(self._on_command, line)
        return True

    def _on_sasl_line(self, line: bytes) -> None:
        if not is_crlf_line(line):
            raise ClientViolation("malformed SASL response line")
        assert self._pending is not None and self._pending.sasl is not None
        self._pending.sasl.client_line(line)
        self._sasl_open = False
        self._emit(SendUpstream(line))
        self._enter(State.REPLY)

    def _count_command(self) -> bool:
        """Count one client command; False (and the session closed) beyond the limit."""
        if self._common.count_command():
            return True
        self._emit(LogEvent("warning", "pop3 client exceeded max_commands; session closed"))
        self._send_client(replies.TOO_MANY_COMMANDS)
        self._close()
        return False

    def _too_long(self) -> None:
        if self._count_command():
            self._send_client(replies.LINE_TOO_LONG)

    def _on_command(self, line: bytes) -> None:
        if not self._count_command():
            return
        if not is_crlf_line(line):
            self._send_client(replies.BAD_LINE_ENDING)
            return
        if has_control_bytes(line):
            self._emit(LogEvent("warning", "pop3 client sent control bytes in a command; refused"))
            self._send_client(replies.BAD_COMMAND_BYTES)
            return
        cmd = classify(line)
        if cmd.kind is Kind.STLS:
            self._client_stls()
            return
        lookups = self._lookups_for(cmd)
        if lookups:
            # Learn what the copy needs first; the client's command follows our own.
            self._after_uidl, self._lookups = cmd, lookups[1:]
            cmd = lookups[0]
        self._send_command(cmd)

    def _lookups_for(self, cmd: Command) -> list[Command]:
        """Our own `LIST n` / `UIDL n` to send before a RETR or TOP of message n."""
        n = cmd.msg
        if n is None or cmd.kind not in (Kind.RETR, Kind.TOP):
            return []
        out = []
        if cmd.kind is Kind.TOP and n not in self._sizes:
            out.append(Command(Kind.LIST_ONE, "LIST", b"LIST %d\r\n" % n, msg=n))
        if n not in self._uidls:
            out.append(Command(Kind.UIDL_ONE, "UIDL", b"UIDL %d\r\n" % n, msg=n))
        return out

    def _send_command(self, cmd: Command) -> None:
        self._pending = cmd
        self._emit(SendUpstream(cmd.line))
        self._enter(State.REPLY)

    def _client_stls(self) -> None:
        offered = self._settings.client_tls == "starttls"
        if not offered or self._client_on_tls or self.authenticated:
            self._send_client(replies.STLS_UNAVAILABLE)
            return
        if len(self._client):
            raise ClientViolation("data pipelined after STLS (command injection attempt)")
        self._send_client(replies.STLS_BEGIN)
        self._emit(StartTls(Side.CLIENT))
        self._enter(State.CLIENT_TLS)

    # --- the upstream side --------------------------------------------------------------

    def _on_upstream_line(self, line: bytes) -> None:
        if self._state is State.GREETING:
            self._on_greeting(line)
        elif self._state is State.UPSTREAM_STLS:
            self._on_upstream_stls(line)
        else:
            self._on_reply(line)

    def _on_greeting(self, line: bytes) -> None:
        status = _status(line)
        if status is None:
            raise UpstreamViolation("malformed greeting")
        if status == ERR:
            self._send_client(line)
            self._close()
        elif self._settings.target_tls == "starttls":
            self._greeting = line  # held until the upstream is on TLS
            self._emit(SendUpstream(b"STLS\r\n"))
            self._enter(State.UPSTREAM_STLS)
        else:
            self._send_client(line)
            self._enter(State.IDLE)

    def _on_upstream_stls(self, line: bytes) -> None:
        status = _status(line)
        if status is None:
            raise UpstreamViolation("malformed reply to STLS")
        if status == ERR:
            # Never fall back to plaintext: the listener promised TLS to the provider.
            self._emit(LogEvent("error", f"pop3 upstream refused STLS: {_text(line)[:80]}"))
            self._send_client(replies.UPSTREAM_TLS_FAILED)
            self._close()
        elif len(self._upstream):
            raise UpstreamViolation("data after the STLS reply (response injection attempt)")
        else:
            self._emit(StartTls(Side.UPSTREAM))
            self._enter(State.UPSTREAM_TLS)

    def _on_reply(self, line: bytes) -> None:
        cmd = self._pending
        assert cmd is not None
        if cmd.kind is Kind.AUTH and _is_continuation(line):
            self._send_client(line)
            self._sasl_open = True
            self._enter(State.IDLE)
            return
        status = _status(line)
        if status is None:
            raise UpstreamViolation(f"malformed reply to {cmd.verb[:8]!r}")
        if self._after_uidl is not None:  # our own LIST n / UIDL n: not for the client
            if status == OK:
                self._learn(cmd, line)
            if self._lookups:
                self._send_command(self._lookups.pop(0))
                return
            held, self._after_uidl = self._after_uidl, None
            self._send_command(held)
            return
        if status == OK and cmd.kind in MULTILINE_KINDS:
            self._begin_body(cmd, line)
            return
        if cmd.kind is Kind.PROBE:  # our own NOOP: a status line, nothing after it
            if len(self._upstream):
                raise UpstreamViolation("data lines after a single-line reply")
            self._pending = None
            self._enter(State.IDLE)
            return
        self._send_client(line)
        if status == OK and cmd.kind is Kind.SINGLE and cmd.verb not in SINGLE_LINE_VERBS:
            self._send_command(Command(Kind.PROBE, "NOOP", b"NOOP\r\n"))
            return
        self._pending = None
        if status == OK:
            self._learn(cmd, line)
        if cmd.kind is Kind.QUIT:
            self._close()
        else:
            self._enter(State.IDLE)

    def _learn(self, cmd: Command, line: bytes) -> None:
        """What a positive single-line reply tells the relay."""
        if cmd.kind is Kind.USER:
            self._user_candidate = cmd.account
        elif cmd.kind is Kind.PASS:
            self._logged_in(self._user_candidate)
        elif cmd.kind is Kind.APOP:
            self._logged_in(cmd.account)
        elif cmd.kind is Kind.AUTH:
            self._logged_in(cmd.sasl.account if cmd.sasl else None)
        elif cmd.kind is Kind.UIDL_ONE:
            pair = uidl_pair(line[len(OK) :])
            if pair and pair[0] == cmd.msg:
                self._remember_uidl(*pair)
        elif cmd.kind is Kind.LIST_ONE:
            size = size_pair(line[len(OK) :])
            if size and size[0] == cmd.msg:
                self._remember_size(*size)

    def _logged_in(self, account: str | None) -> None:
        self.authenticated = True
        self.account = account

    def _remember_uidl(self, msg: int, uid: str) -> None:
        if msg in self._uidls or len(self._uidls) < UIDL_CACHE_MAX:
            self._uidls[msg] = uid

    def _remember_size(self, msg: int, size: int) -> None:
        if msg in self._sizes or len(self._sizes) < UIDL_CACHE_MAX:
            self._sizes[msg] = size

    # --- multi-line responses -----------------------------------------------------------

    def _begin_body(self, cmd: Command, status_line: bytes) -> None:
        self._body = MultilineReader()
        self._send_client(status_line)
        if cmd.kind is Kind.CAPA:
            offer = self._settings.client_tls == "starttls" and not self._client_on_tls
            self._capa = CapaRewriter(offer_stls=offer, line_limit=self._settings.max_line_length)
        elif cmd.kind is Kind.UIDL_ALL:
            self._uidl_lines = LineBuffer()
        elif cmd.kind is Kind.LIST_ALL:
            self._list_lines = LineBuffer()
        elif cmd.kind is Kind.TOP:
            n = cmd.msg
            uid = self._uidls.get(n) if n is not None else None
            self._top = TopWatch(cmd.lines, self._sizes.get(n) if n is not None else None)
            self._top_held = bytearray()
            self._top_report = {"user": self.account, "msg": n, "uidl": uid}
            self._status_line = _text(status_line)
        elif cmd.kind is Kind.RETR:
            uid = self._uidls.get(cmd.msg) if cmd.msg is not None else None
            self._message = {"user": self.account, "msg": cmd.msg, "uidl": uid, "size": 0}
            self._status_line = _text(status_line)
            pop3 = Pop3Section(self.account, uid, cmd.msg)
            self._emit(BeginMessage(MessageStart("incoming", pop3=pop3)))
        self._enter(State.MULTILINE)

    def _feed_body(self, data: bytes) -> None:
        assert self._body is not None and self._pending is not None
        chunk = self._body.feed(data)
        if self._capa is not None:
            self._send_client(self._capa.feed(chunk.wire))
        else:
            self._send_client(chunk.wire)
        if self._top is not None and chunk.data:
            self._top.feed(chunk.data)
            if self._top_held is not None:
                self._top_held += chunk.data
                if len(self._top_held) > TOP_HOLD_MAX:
                    self._spool_top()
                chunk_data = b""
            else:
                chunk_data = chunk.data
        else:
            chunk_data = chunk.data
        if self._message is not None and chunk_data:
            self._message["size"] += len(chunk_data)
            self._emit(MessageData(chunk_data))
        if self._uidl_lines is not None:
            self._parse_lines(self._uidl_lines, chunk.data, uidl_pair, self._remember_uidl)
        if self._list_lines is not None:
            self._parse_lines(self._list_lines, chunk.data, size_pair, self._remember_size)
        if chunk.done:
            self._upstream.feed(chunk.rest)
            self._end_body()

    def _parse_lines(
        self,
        lines: LineBuffer,
        data: bytes,
        parse: Callable[[bytes], tuple[int, Any] | None],
        remember: Callable[[int, Any], None],
    ) -> None:
        """Learn from each complete line of a UIDL or LIST listing (`parse` -> `remember`)."""
        lines.feed(data)
        while True:
            try:
                line = lines.take_line(self._settings.max_line_length)
            except LineTooLong:
                lines.discard_line()  # not a listing line; nothing to learn
                continue
            if line is None:
                return
            if pair := parse(line):
                remember(*pair)

    def _spool_top(self) -> None:
        """Start the copy of a TOP response that may be the whole message."""
        held, self._top_held = bytes(self._top_held or b""), None
        report = self._top_report
        self._message = {**report, "size": len(held), "via": "top"}
        pop3 = Pop3Section(report["user"], report["uidl"], report["msg"])
        self._emit(BeginMessage(MessageStart("incoming", pop3=pop3)))
        if held:
            self._emit(MessageData(held))

    def _end_top(self) -> bool:
        """The TOP response ended: archive it if whole (True: now ARCHIVING)."""
        assert self._top is not None
        whole, self._top = self._top.whole(), None
        if whole:
            if self._message is None:
                self._spool_top()
            self._emit(CommitMessage(outcome="delivered", reply=self._status_line))
            self._enter(State.ARCHIVING)
            return True
        if self._message is not None:
            self._emit(AbortMessage())  # partial: the client saw only part of it
            self._message = None
        self._top_held = None
        return False

    def _end_body(self) -> None:
        cmd = self._pending
        assert cmd is not None
        self._pending = None
        self._body = None
        if self._capa is not None:
            self._send_client(self._capa.finish())
            self._capa = None
        self._uidl_lines = self._list_lines = None
        if self._top is not None and self._end_top():
            return
        if cmd.kind is Kind.RETR:
            self._emit(CommitMessage(outcome="delivered", reply=self._status_line))
            self._enter(State.ARCHIVING)
        else:
            self._send_client(END_LINE)
            self._enter(State.IDLE)
