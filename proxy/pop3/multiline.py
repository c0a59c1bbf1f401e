"""Streaming reader for the data of a POP3 multi-line response (RFC 1939 section 3).

Theory of operation. After a `+OK` status line the upstream sends data lines, each
ending in CRLF; a line that starts with "." has had one "." prepended (byte-stuffing);
the line ".\\r\\n" ends the response. `MultilineReader.feed(chunk)` returns what can
be released now:

- `wire`: the bytes exactly as received (still stuffed) for the client, and
- `data`: the same lines unstuffed -- the message as the server holds it,

never including the final ".\\r\\n", which the relay sends itself when it decides to
(for RETR: only after the copy is durable).

The reader works on whole chunks with `bytes.find`/`bytes.replace` rather than byte by
byte. It pretends a CRLF came just before the data (the status line's own CRLF) so that
"end of data" is always the sequence CRLF "." CRLF and "start of a stuffed line" is
always CRLF "."; those two synthetic bytes are never released. Whatever suffix of a
chunk could be the start of CRLF "." CRLF (at most four bytes) is held back until the
next chunk decides it, so chunk boundaries can fall anywhere -- the released bytes are
the same for every split of the input, and memory stays bounded by one chunk.
Only CRLF "." CRLF ends the data: a bare LF or CR never does (DESIGN invariant 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import LocalProtocolError
from proxy.pop3.limits import TERMINATOR

_STUFFED = b"\r\n."
_UNSTUFFED = b"\r\n"
# Proper prefixes of the terminator, longest first: a chunk ending in one is held back.
_PARTIAL_ENDS = tuple(TERMINATOR[:n] for n in range(len(TERMINATOR) - 1, 0, -1))


@dataclass(frozen=True, slots=True)
class BodyChunk:
    wire: bytes
    data: bytes
    done: bool = False
    #: bytes that followed the terminating line (only set when done)
    rest: bytes = b""


def _held_suffix(buf: bytes) -> int:
    for partial in _PARTIAL_ENDS:
        if buf.endswith(partial):
            return len(partial)
    return 0


class MultilineReader:
    """Frames one multi-line response; create a new reader for each response."""

    def __init__(self) -> None:
        self._held = _UNSTUFFED  # the status line's CRLF, never released
        self._synthetic = len(_UNSTUFFED)
        self.done = False

    def feed(self, chunk: bytes) -> BodyChunk:
        if self.done:
            raise LocalProtocolError("multi-line response already complete")
        buf = self._held + chunk
        end = buf.find(TERMINATOR)
        if end >= 0:
            region, rest = buf[: end + len(_UNSTUFFED)], buf[end + len(TERMINATOR) :]
            self._held = b""
            self.done = True
        else:
            keep = _held_suffix(buf)
            region, rest = buf[: len(buf) - keep], b""
            self._held = buf[len(buf) - keep :]
        data = region.replace(_STUFFED, _UNSTUFFED)
        if self._synthetic and region:
            # region starts with the synthetic CRLF; unstuffing kept it in place.
            cut = min(self._synthetic, len(region))
            region, data = region[cut:], data[cut:]
            self._synthetic -= cut
        return BodyChunk(region, data, self.done, rest)


def stuff(data: bytes) -> bytes:
    """Byte-stuff `data` (CRLF lines) for sending as multi-line data (tests, fixtures)."""
    return (_UNSTUFFED + data).replace(_UNSTUFFED + b".", _STUFFED + b".")[len(_UNSTUFFED) :]
