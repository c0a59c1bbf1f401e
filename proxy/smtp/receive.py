"""A receive-only SMTP server core for journal listeners (`protocol = "smtp-journal"`).

Theory of operation. Unlike the relay core there is no upstream: mailtee *is* the final
destination, the message is archived and never passed on. The driver
(proxy/journal_session.py) feeds client bytes with `receive(data)` and performs
`actions()` in order; three actions need an answer before anything else is read:

- `StartTls()`           -> `tls_started()` (or the driver closes the connection)
- `CheckLogin(u, p)`     -> `login_result(ok)` (a local password, archive/logins.py)
- `EndMessage()`         -> `commit_result(ok)`, once the copy is durable (or failed)

So the 250 after the final dot is sent only after the copy is durable (DESIGN invariant
1); a copy that cannot be written gets 451 4.3.0 and the sender keeps the message.
DATA goes through the relay's `DataReader`, which refuses bare CR/LF (SMTP smuggling)
and only ends at CRLF.CRLF. Commands are one line each (no PIPELINING is offered, so
no client may send ahead, and plaintext after STARTTLS is an attack: the session
closes). Limits are the listener's: line length, message size (552), commands (421),
recipients per message (`MAX_RECIPIENTS`, RFC 5321 4.5.3.1.8 requires at least 100).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.buffer import TOO_LONG, LineBuffer, is_crlf_line
from proxy.smtp import replies as R
from proxy.smtp.data import DataReader

MAX_RECIPIENTS = 1000
_PATH = re.compile(rb"^(?:MAIL FROM|RCPT TO):\s*<([^<>\s]*)>(?:\s+.*)?$", re.I)


@dataclass(frozen=True, slots=True)
class ReceiveSettings:
    hostname: str = "mailtee.localdomain"
    client_tls: str = "none"  # none | starttls | implicit
    require_auth: bool = False
    max_line_length: int = 2048
    max_message_size: int = 100 * 1024 * 1024
    max_commands: int = 10_000


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class CheckLogin:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BeginMessage:
    envelope: dict[str, Any]  # the `.mpr` smtp section


@dataclass(frozen=True, slots=True)
class MessageData:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndMessage:
    pass


@dataclass(frozen=True, slots=True)
class AbortMessage:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


Action = (
    Send | StartTls | CheckLogin | BeginMessage | MessageData | EndMessage | AbortMessage | Close
)


def _r(text: str) -> bytes:
    return text.encode() + b"\r\n"


OK = _r("250 2.0.0 Ok")
SENDER_OK = _r("250 2.1.0 Ok")
RCPT_OK = _r("250 2.1.5 Ok")
START_DATA = _r("354 End data with <CR><LF>.<CR><LF>")
ACCEPTED = _r("250 2.0.0 Ok: archived")
BYE = _r("221 2.0.0 Bye")
SYNTAX = _r("501 5.5.4 Syntax error in parameters")
UNKNOWN = _r("502 5.5.2 Command not implemented")
BAD_SEQUENCE = _r("503 5.5.1 Bad sequence of commands")
NEED_MAIL = _r("503 5.5.1 Need MAIL command first")
NEED_RCPT = _r("503 5.5.1 Need RCPT command first")
AUTH_REQUIRED = _r("530 5.7.0 Authentication required")
AUTH_OK = _r("235 2.7.0 Authentication successful")
AUTH_FAILED = _r("535 5.7.8 Authentication credentials invalid")
AUTH_TLS = R.AUTH_NEEDS_TLS
TOO_MANY_RCPTS = _r("452 4.5.3 Too many recipients")
VRFY = _r("252 2.1.5 Cannot VRFY user")
PROMPT_EMPTY = _r("334 ")
PROMPT_USER = _r("334 VXNlcm5hbWU6")
PROMPT_PASS = _r("334 UGFzc3dvcmQ6")


class JournalReceiver:
    """One receive-only SMTP session; see the module docstring."""

    def __init__(self, settings: ReceiveSettings, *, tls_active: bool = False) -> None:
        self.s = settings
        self.tls = tls_active
        self.buf = LineBuffer(settings.max_line_length)
        self._out: list[Action] = []
        self.helo: str | None = None
        self.auth_user: str | None = None
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.data: DataReader | None = None
        self.too_big = False
        self.commands = 0
        self.waiting = False  # an answer to StartTls/CheckLogin/EndMessage is due
        self.closed = False
        self._auth: tuple[str, str | None] | None = None  # (mechanism, user) in progress

    # --- driver interface --------------------------------------------------------------

    def start(self) -> None:
        self._send(_r(f"220 {self.s.hostname} ESMTP mailtee journal"))

    def actions(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    @property
    def reading(self) -> bool:
        return not (self.waiting or self.closed)

    def receive(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            if self.data is not None:
                self._out.append(AbortMessage())
            self._close()
            return
        self.buf.feed(data)
        self._process()

    def tls_started(self) -> None:
        self.waiting = False
        self.tls = True
        self.helo, self.auth_user = None, None  # RFC 3207 4.2: forget what came before
        self._reset()
        self._process()

    def login_result(self, ok: bool) -> None:
        self.waiting = False
        if ok and self._auth is not None:
            self.auth_user = self._auth[1]
            self._send(AUTH_OK)
        else:
            self._send(AUTH_FAILED)
        self._auth = None
        self._process()

    def commit_result(self, ok: bool) -> None:
        self.waiting = False
        self._send(ACCEPTED if ok else R.ARCHIVE_FAILED)
        self._reset()
        self._process()

    def timeout(self) -> None:
        self._send(R.CLIENT_TIMEOUT.replace(b"{host}", self.s.hostname.encode()))
        if self.data is not None:
            self._out.append(AbortMessage())
        self._close()

    # --- internals ---------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._out.append(Send(data))

    def _close(self) -> None:
        self.closed = True
        self._out.append(Close())

    def _reset(self) -> None:
        self.mail_from, self.rcpts, self.data, self.too_big = None, [], None, False

    def _process(self) -> None:
        while self.reading:
            if self.data is not None:
                if not self._data_step():
                    return
                continue
            line = self.buf.next_line()
            if line is None:
                return
            if line is TOO_LONG:
                self._send(R.LINE_TOO_LONG)
                continue
            assert isinstance(line, bytes)
            self.commands += 1
            if self.commands > self.s.max_commands:
                self._send(R.TOO_MANY_COMMANDS.replace(b"{host}", self.s.hostname.encode()))
                self._close()
                return
            if not is_crlf_line(line):
                self._send(R.COMMAND_BARE_NEWLINE)
                continue
            if self._auth is not None:
                self._auth_step(line[:-2])
            else:
                self._command(line[:-2])

    def _data_step(self) -> bool:
        assert self.data is not None
        raw = self.buf.take_all()
        if not raw:
            return False
        chunk = self.data.feed(raw)
        if self.data.size > self.s.max_message_size:
            self.too_big = True
        if chunk.message and not self.too_big:
            self._out.append(MessageData(chunk.message))
        if not chunk.done:
            return False
        self.buf.feed(chunk.rest)
        bare = self.data.bare_newline
        if bare or self.too_big:
            self._out.append(AbortMessage())
            self._send(
                R.BARE_NEWLINE.replace(b"{kind}", bare.encode()) if bare else R.MESSAGE_TOO_BIG
            )
            self._reset()
            return True
        self.waiting = True
        self._out.append(EndMessage())
        return True

    def _command(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        v = verb.upper()
        if v in (b"EHLO", b"HELO"):
            if not arg.strip():
                self._send(SYNTAX)
                return
            self.helo = arg.strip().decode("utf-8", "replace")
            self._reset()
            self._send(self._ehlo() if v == b"EHLO" else _r(f"250 {self.s.hostname}"))
        elif v == b"STARTTLS":
            if self.tls or self.s.client_tls != "starttls":
                self._send(R.TLS_ALREADY if self.tls else R.TLS_NOT_AVAILABLE)
            elif len(self.buf):
                self._close()  # plaintext pipelined behind STARTTLS: CVE-2011-0411 class
            else:
                self._send(R.READY_TLS)
                self.waiting = True
                self._out.append(StartTls())
        elif v == b"AUTH":
            self._auth_start(arg)
        elif v == b"MAIL":
            self._mail(line)
        elif v == b"RCPT":
            self._rcpt(line)
        elif v == b"DATA":
            if self.mail_from is None:
                self._send(NEED_MAIL)
            elif not self.rcpts:
                self._send(NEED_RCPT)
            else:
                self._send(START_DATA)
                self.data = DataReader()
                self._out.append(BeginMessage(self._envelope()))
        elif v == b"RSET":
            self._reset()
            self._send(OK)
        elif v == b"NOOP":
            self._send(OK)
        elif v == b"QUIT":
            self._send(BYE)
            self._close()
        elif v == b"VRFY":
            self._send(VRFY)
        elif v == b"BDAT":
            self._send(R.BDAT_NOT_SUPPORTED)
        else:
            self._send(UNKNOWN)

    def _ehlo(self) -> bytes:
        lines = [self.s.hostname.encode(), b"SIZE %d" % self.s.max_message_size, b"8BITMIME"]
        lines.append(b"ENHANCEDSTATUSCODES")
        if self.s.client_tls == "starttls" and not self.tls:
            lines.append(b"STARTTLS")
        if self.s.require_auth and self._auth_allowed():
            lines.append(b"AUTH PLAIN LOGIN")
        return R.build_reply(250, lines)

    def _auth_allowed(self) -> bool:
        """Passwords only under TLS, unless the listener has no TLS at all (LAN only)."""
        return self.tls or self.s.client_tls == "none"

    def _envelope(self) -> dict[str, Any]:
        return {
            "helo": self.helo,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpts),
            "auth_user": self.auth_user,
        }

    def _mail(self, line: bytes) -> None:
        if self.helo is None:
            self._send(R.NEED_EHLO)
            return
        if self.s.require_auth and self.auth_user is None:
            self._send(AUTH_REQUIRED)
            return
        if self.mail_from is not None:
            self._send(BAD_SEQUENCE)
            return
        m = _PATH.match(line)
        if m is None or not line.upper().startswith(b"MAIL FROM:"):
            self._send(SYNTAX)
            return
        size = re.search(rb"\bSIZE=(\d+)", line, re.I)
        if size and int(size.group(1)) > self.s.max_message_size:
            self._send(R.MESSAGE_TOO_BIG)
            return
        self.mail_from = m.group(1).decode("utf-8", "replace")
        self._send(SENDER_OK)

    def _rcpt(self, line: bytes) -> None:
        if self.mail_from is None:
            self._send(NEED_MAIL)
            return
        m = _PATH.match(line)
        if m is None or not m.group(1) or not line.upper().startswith(b"RCPT TO:"):
            self._send(SYNTAX)
            return
        if len(self.rcpts) >= MAX_RECIPIENTS:
            self._send(TOO_MANY_RCPTS)
            return
        self.rcpts.append(m.group(1).decode("utf-8", "replace"))
        self._send(RCPT_OK)

    # --- AUTH PLAIN / LOGIN (RFC 4954, RFC 4616) ----------------------------------------

    def _auth_start(self, arg: bytes) -> None:
        if not self.s.require_auth:
            self._send(UNKNOWN)
            return
        if not self._auth_allowed():
            self._send(AUTH_TLS)
            return
        if self.auth_user is not None or self.mail_from is not None or self.helo is None:
            self._send(BAD_SEQUENCE)
            return
        mech, _, initial = arg.partition(b" ")
        mech = mech.upper()
        if mech == b"PLAIN":
            self._auth = ("PLAIN", None)
            if initial:
                self._auth_step(initial)
            else:
                self._send(PROMPT_EMPTY)
        elif mech == b"LOGIN":
            self._auth = ("LOGIN", None)
            if initial:
                self._auth_step(initial)
            else:
                self._send(PROMPT_USER)
        else:
            self._send(_r("504 5.5.4 Unrecognized authentication type"))

    def _auth_step(self, line: bytes) -> None:
        assert self._auth is not None
        mech, user = self._auth
        if line == b"*":
            self._auth = None
            self._send(_r("501 5.0.0 Authentication cancelled"))
            return
        try:
            decoded = base64.b64decode(line, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            self._auth = None
            self._send(_r("501 5.5.2 Cannot decode response"))
            return
        if mech == "PLAIN":
            parts = decoded.split("\0")
            if len(parts) != 3 or not parts[1]:
                self._auth = None
                self._send(AUTH_FAILED)
                return
            self._auth = ("PLAIN", parts[1])
            self.waiting = True
            self._out.append(CheckLogin(parts[1], parts[2]))
        elif user is None:
            self._auth = ("LOGIN", decoded)
            self._send(PROMPT_PASS)
        else:
            self.waiting = True
            self._out.append(CheckLogin(user, decoded))
