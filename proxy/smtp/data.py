"""The DATA phase: end-of-data detection, dot-unstuffing and bare CR/LF refusal.

Theory of operation. The client's DATA stream S is scanned as if it were preceded by the
CRLF that ended the DATA command (RFC 5321 4.1.1.4: the terminator is "<CRLF>.<CRLF>",
and an empty message is just ".<CRLF>"). Each `feed()` looks at the unconsumed tail of
the previous chunk plus the new chunk and returns:

- `wire`: raw bytes (still dot-stuffed) safe to relay upstream now,
- `message`: the same bytes dot-unstuffed (RFC 5321 4.5.2) for the archive copy,
- once the terminator is seen, `done=True` and `rest` = bytes the client pipelined
  after it. The terminator's ".<CRLF>" is *never* part of `wire`: the relay sends it
  only after the copy is durable (DESIGN invariant 1).

A few bytes are held back at the end of each chunk so that a terminator or a
"<CRLF>." split across chunks is recognised; memory stays bounded whatever the
message size.

SMTP smuggling (2023): a peer that ends a message at "<LF>.<LF>" or "<CR>.<CR>" while
we wait for "<CRLF>.<CRLF>" would let a second, unarchived message through. Like
Postfix's smtpd_forbid_bare_newline we refuse any bare LF or bare CR in DATA; the
refusal is reported once, with the offending kind, and the reader keeps consuming to
the real terminator so the session stays in sync.
"""

from __future__ import annotations

from dataclasses import dataclass

TERMINATOR = b"\r\n.\r\n"
#: bytes kept back between chunks: enough for a split terminator (5 bytes) minus one
_HOLD = 4


@dataclass(frozen=True, slots=True)
class DataChunk:
    wire: bytes
    message: bytes
    done: bool = False
    rest: bytes = b""


class DataReader:
    """Incremental DATA parser; see the module docstring."""

    def __init__(self) -> None:
        self._carry = b"\r\n"  # the CRLF that ended the DATA command (synthetic)
        self._synthetic = 2  # how many leading bytes of _carry are not client bytes
        self.size = 0  # unstuffed message bytes produced so far
        self.bare_newline: str | None = None  # "LF" or "CR" once seen
        self.done = False  # the terminator was seen; feed() must not be called again

    def _check_bare(self, buf: bytes, end: int, complete: bool) -> None:
        """Look for a bare LF/CR in buf[:end]; buf[0] was checked by an earlier call."""
        if self.bare_newline is not None:
            return
        crlf = buf.count(b"\r\n", 0, end)
        if buf.count(b"\n", 1, end) != crlf:
            self.bare_newline = "LF"
        # A CR in the last position may be completed by the next chunk.
        elif buf.count(b"\r", 0, end if complete else end - 1) != crlf:
            self.bare_newline = "CR"

    def _emit(self, buf: bytes, n: int) -> tuple[bytes, bytes]:
        """Split off buf[:n] as (wire, unstuffed message), dropping synthetic bytes."""
        head = buf[:n]
        message = head.replace(b"\r\n.", b"\r\n")
        skip = min(self._synthetic, n)
        self._synthetic -= skip
        return head[skip:], message[skip:]

    def feed(self, data: bytes) -> DataChunk:
        buf = self._carry + data
        idx = buf.find(TERMINATOR)
        if idx >= 0:
            self._check_bare(buf, idx + len(TERMINATOR), complete=True)
            wire, message = self._emit(buf, idx + 2)
            self.size += len(message)
            self._carry = b""
            self.done = True
            return DataChunk(wire, message, True, buf[idx + len(TERMINATOR) :])
        self._check_bare(buf, len(buf), complete=False)
        n = len(buf) - _HOLD
        if n <= 0:
            self._carry = buf
            return DataChunk(b"", b"")
        # Never split inside a "<CRLF>." (the dot would escape unstuffing).
        if buf[n - 2 : n + 1] == b"\r\n.":
            n -= 2
        elif buf[n - 1 : n + 2] == b"\r\n.":
            n -= 1
        wire, message = self._emit(buf, n)
        self._carry = buf[n:]
        self.size += len(message)
        return DataChunk(wire, message)
