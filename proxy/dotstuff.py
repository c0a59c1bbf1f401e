"""Dot-stuffed data, framed: SMTP DATA (RFC 5321 4.1.1.4, 4.5.2) and POP3 multi-line
responses (RFC 1939 section 3) end the same way and are stuffed the same way, so one
reader serves both (and the journal listener's receive-only core).

Theory of operation. The data is scanned as if it were preceded by the CRLF that ended
the command or status line, so that "end of data" is always CRLF "." CRLF (an empty
message is just ".\\r\\n") and "start of a stuffed line" is always CRLF "."; those two
synthetic bytes are never released. `DotReader.feed(chunk)` returns what can be released
now:

- `wire`: the bytes exactly as received (still stuffed), safe to pass on now,
- `data`: the same bytes unstuffed -- the message itself, for the archive copy,
- once the terminator is seen, `done=True` and `rest` = the bytes that followed it
  (pipelined commands). The terminator's ".\\r\\n" is *never* part of `wire`: the relay
  sends it itself, only after the copy is durable (DESIGN invariant 1).

Whatever suffix of the buffer could be the start of CRLF "." CRLF (at most four bytes:
so a "<CRLF>." is never split and a CRLF pair never straddles two releases) is held back
until the next chunk decides it. Chunk boundaries can fall anywhere -- the released bytes
are the same for every split of the input -- and memory stays bounded by one chunk.

Only CRLF "." CRLF ends the data: a bare LF or CR never does (DESIGN invariant 3). With
`refuse_bare_newlines` (SMTP: the smuggling class of 2023, like Postfix's
smtpd_forbid_bare_newline) the first bare LF or CR is reported in `bare_newline` ("LF" or
"CR"); the reader keeps consuming to the real terminator so the session stays in sync,
and the caller refuses the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import LocalProtocolError

TERMINATOR = b"\r\n.\r\n"
_STUFFED = b"\r\n."
_CRLF = b"\r\n"
# Proper prefixes of the terminator, longest first: a buffer ending in one is held back.
_PARTIAL_ENDS = tuple(TERMINATOR[:n] for n in range(len(TERMINATOR) - 1, 0, -1))
#: the most bytes held back between two feeds
MAX_HELD = len(TERMINATOR) - 1


@dataclass(frozen=True, slots=True)
class DotChunk:
    wire: bytes
    data: bytes
    done: bool = False
    #: bytes that followed the terminator (only set when done)
    rest: bytes = b""

    @property
    def message(self) -> bytes:
        """SMTP's name for `data` (the message as the archive keeps it)."""
        return self.data


def _held_suffix(buf: bytes) -> int:
    for partial in _PARTIAL_ENDS:
        if buf.endswith(partial):
            return len(partial)
    return 0


class DotReader:
    """Frames one dot-stuffed body; create a new reader for each message/response."""

    def __init__(self, *, refuse_bare_newlines: bool = False) -> None:
        self._held = _CRLF  # the command's / status line's CRLF, never released
        self._synthetic = len(_CRLF)
        self._check_bare = refuse_bare_newlines
        #: unstuffed bytes released so far
        self.size = 0
        #: "LF" or "CR" once a bare one was seen (only with refuse_bare_newlines)
        self.bare_newline: str | None = None
        #: the terminator was seen; feed() must not be called again
        self.done = False

    def _bare(self, region: bytes) -> None:
        """A released region never splits a CRLF pair (see the module docstring), so
        counting within it finds every bare LF and CR exactly once."""
        crlf = region.count(_CRLF)
        if region.count(b"\n") != crlf:
            self.bare_newline = "LF"
        elif region.count(b"\r") != crlf:
            self.bare_newline = "CR"

    def feed(self, chunk: bytes) -> DotChunk:
        """One pass over the chunk: every CRLF "." is either the terminator (CRLF "."
        CRLF), a line whose first dot is stuffing (dropped from `data`), or, at the very
        end, undecided (held back with the rest of the partial terminator)."""
        if self.done:
            raise LocalProtocolError("dot-stuffed data already complete")
        buf = self._held + chunk if self._held else chunk
        n = len(buf)
        end = -1
        pieces: list[bytes] = []
        first = self._synthetic  # the synthetic CRLF is never released
        start = first
        i = buf.find(_STUFFED)
        while i >= 0:
            j = i + len(_STUFFED)
            if buf.startswith(_CRLF, j):
                end = i  # the terminator
                break
            if j >= n or (j + 1 == n and buf[j] == 0x0D):
                break  # a possible terminator split by the chunk: held back below
            pieces.append(buf[start : i + 2])  # drop the stuffing dot at i + 2
            start = j
            i = buf.find(_STUFFED, j)
        if end >= 0:
            region_end, rest = end + len(_CRLF), buf[end + len(TERMINATOR) :]
            self._held = b""
            self.done = True
        else:
            region_end, rest = n - _held_suffix(buf), b""
            self._held = buf[region_end:]
        if first:
            first = min(first, region_end)
            self._synthetic -= first
        region = buf[first:region_end]
        if self._check_bare and self.bare_newline is None and region:
            self._bare(region)
        if pieces:
            pieces.append(buf[start:region_end])
            data = b"".join(pieces)
        else:
            data = region
        self.size += len(data)
        return DotChunk(region, data, self.done, rest)


def stuff(data: bytes) -> bytes:
    """Dot-stuff `data` (CRLF lines) for sending (tests, fixtures, the demo provider)."""
    return (_CRLF + data).replace(_CRLF + b".", _STUFFED + b".")[len(_CRLF) :]
