"""SMTP replies: parsing the upstream's (possibly multi-line) replies, and our own.

Every reply the proxy composes itself lives here as a constant, so the wording and the
enhanced status codes (RFC 3463) are reviewed in one place instead of scattered through
the state machine. Upstream replies are relayed as the exact bytes received.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import RemoteProtocolError

#: RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; providers' EHLO lines and
#: human text run longer in practice, so the limit is the session's max_line_length.
#: A reply of more lines than this is hostile (EHLO lists are a few dozen lines).
MAX_REPLY_LINES = 200


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[bytes, ...]  # the text after "NNN-" / "NNN ", without CRLF
    raw: bytes  # exactly as received, CRLFs included

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def text(self) -> str:
        """The reply as one line for reports and logs (first line, decoded leniently)."""
        first = self.lines[0].decode("utf-8", "replace") if self.lines else ""
        return f"{self.code} {first}".rstrip()


def parse_reply_line(line: bytes) -> tuple[int, bool, bytes]:
    """`b"250-PIPELINING"` -> (250, False, b"PIPELINING"); last line has is_last True."""
    if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345":
        raise RemoteProtocolError("upstream sent a malformed reply line")
    sep = line[3:4]
    if sep not in (b"", b" ", b"-"):
        raise RemoteProtocolError("upstream sent a malformed reply line")
    return int(line[:3]), sep != b"-", line[4:]


class ReplyReader:
    """Accumulates reply lines until a complete reply is available."""

    def __init__(self) -> None:
        self._lines: list[bytes] = []
        self._raw: list[bytes] = []
        self._code: int | None = None

    def add_line(self, line: bytes, raw: bytes) -> Reply | None:
        code, last, text = parse_reply_line(line)
        if self._code is not None and code != self._code:
            raise RemoteProtocolError("upstream changed the code inside a multi-line reply")
        self._code = code
        self._lines.append(text)
        self._raw.append(raw)
        if len(self._lines) > MAX_REPLY_LINES:
            raise RemoteProtocolError("upstream sent an overlong multi-line reply")
        if not last:
            return None
        reply = Reply(code, tuple(self._lines), b"".join(self._raw))
        self._lines, self._raw, self._code = [], [], None
        return reply


def build_reply(code: int, lines: list[bytes]) -> bytes:
    """Format a (multi-line) reply: all but the last line use "NNN-"."""
    c = str(code).encode()
    out = [c + b"-" + line + b"\r\n" for line in lines[:-1]]
    out.append(c + b" " + lines[-1] + b"\r\n")
    return b"".join(out)


def _r(text: str) -> bytes:
    return text.encode() + b"\r\n"


# --- replies of the proxy's own ----------------------------------------------------
UPSTREAM_UNAVAILABLE = _r("421 4.4.1 {host} Service not available: provider unreachable")
UPSTREAM_LOST = _r("421 4.4.2 {host} Connection to provider lost, closing")
UPSTREAM_TLS_FAILED = _r("421 4.7.0 {host} TLS with the provider failed, closing")
UPSTREAM_NO_STARTTLS = _r("421 4.7.0 {host} Provider does not offer STARTTLS, closing")
UPSTREAM_AUTH_FAILED = _r("421 4.7.0 {host} Provider refused the configured credentials")
UPSTREAM_PROTOCOL = _r("421 4.4.0 {host} Provider sent an invalid reply, closing")
UPSTREAM_TIMEOUT = _r("421 4.4.2 {host} Provider timed out, closing")
CLIENT_TIMEOUT = _r("421 4.4.2 {host} Idle timeout, closing")
TOO_MANY_COMMANDS = _r("421 4.7.0 {host} Too many commands, closing")
CLOSING = _r("421 4.3.0 {host} Service not available, closing transmission channel")
LINE_TOO_LONG = _r("500 5.5.2 Line too long")
BARE_NEWLINE = _r("550 5.5.2 Error: bare <{kind}> received")
ARCHIVE_FAILED = _r("451 4.3.0 Message not accepted: archive unavailable, try again later")
DATA_END_UPSTREAM_LOST = _r(
    "451 4.4.2 Connection to provider lost after the message was sent; delivery status unknown"
)
COMMAND_BARE_NEWLINE = _r("500 5.5.2 Error: bare <CR> or <LF> in command")
COMMAND_CONTROL_BYTES = _r("500 5.5.2 Error: control characters in command")
DATA_UPSTREAM_LOST = _r("451 4.4.2 Connection to provider lost, message not sent")
MESSAGE_TOO_BIG = _r("552 5.3.4 Message size exceeds fixed maximum message size")
READY_TLS = _r("220 2.0.0 Ready to start TLS")
TLS_NOT_AVAILABLE = _r("502 5.5.1 STARTTLS not available")
TLS_ALREADY = _r("503 5.5.1 TLS already active")
BDAT_NOT_SUPPORTED = _r("502 5.5.1 BDAT not supported")
BURL_NOT_SUPPORTED = _r("502 5.5.1 BURL not supported")
PROVENANCE_REFUSED = _r("550 5.7.0 XCLIENT/XFORWARD not permitted")
AUTH_NOT_NEEDED = _r("503 5.5.1 Already authenticated by the proxy")
AUTH_NEEDS_TLS = _r("538 5.7.11 Encryption required for requested authentication mechanism")
NEED_EHLO = _r("503 5.5.1 Send EHLO first")
