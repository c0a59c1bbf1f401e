"""The receive buffer both protocol cores use: CRLF lines under a hard length limit.

Theory of operation. Bytes from one peer are appended with `feed()`. `take_line(limit)`
returns the next line including its line feed, or None while it is incomplete; a line
longer than `limit` (line ending included) raises `LineTooLong` as soon as that is
certain, without waiting for its end, so a peer cannot make the buffer grow: it holds
at most one partial line plus whatever one read returned. The search for the line feed
resumes where the previous search stopped, so byte-by-byte input stays linear.

`next_line()` is the forgiving form the SMTP core uses: an overlong line is reported
once as `TOO_LONG` and the rest of it is dropped, so the session can answer "500 Line
too long" and resynchronise at the next line feed.
"""

from __future__ import annotations

import re
from typing import Final

from proxy.errors import RemoteProtocolError


class LineTooLong(RemoteProtocolError):
    """A peer sent a line longer than the session's limit."""


class _TooLong:
    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG: Final = _TooLong()


class LineBuffer:
    def __init__(self, max_line: int = 0) -> None:
        self.max_line = max_line  # the limit next_line() applies
        self._buf = bytearray()
        self._scanned = 0  # no line feed in _buf[:_scanned]
        self._discarding = False  # next_line(): inside the tail of an overlong line

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_line(self, limit: int) -> bytes | None:
        """The next complete line (LF included), None if incomplete; LineTooLong."""
        end = self._buf.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buf)
            if len(self._buf) >= limit:
                raise LineTooLong(f"line longer than {limit} octets")
            return None
        if end + 1 > limit:
            raise LineTooLong(f"line longer than {limit} octets")
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        self._scanned = 0
        return line

    def discard_line(self) -> bool:
        """Drop bytes up to and including the next line feed; True once it was found."""
        end = self._buf.find(b"\n", self._scanned)
        if end < 0:
            self._buf.clear()
            self._scanned = 0
            return False
        del self._buf[: end + 1]
        self._scanned = 0
        return True

    def next_line(self) -> bytes | _TooLong | None:
        """The next line within `max_line`, TOO_LONG (once per overlong line), or None."""
        if self._discarding:
            if not self.discard_line():
                return None
            self._discarding = False
        try:
            return self.take_line(self.max_line)
        except LineTooLong:
            # Drop the overlong line now, or its tail as it arrives.
            self._discarding = not self.discard_line()
            return TOO_LONG

    def take_all(self) -> bytes:
        """Everything buffered, raw (for switching to DATA or TLS handling)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return data

    take = take_all


#: Control characters a command line must not hold: C0 except TAB, and DEL. NUL is the
#: sharp one -- a C server cuts the line there (`DATA\x00...` is DATA to Postfix), so
#: the relay and the server would disagree about which command it was.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def has_control_bytes(line: bytes) -> bool:
    """True when `line` (CRLF excluded) holds a control byte other than TAB."""
    return _CONTROL.search(line[:-2] if line.endswith(b"\r\n") else line) is not None


def is_crlf_line(line: bytes) -> bool:
    """True when `line` ends with CRLF and holds no other CR or LF.

    A bare CR or LF inside a command is where two parsers can disagree about where the
    line ends (the upstream might see two commands where the relay saw one), so a relay
    neither relays nor answers such a line as if it understood it.
    """
    body = line[:-2]
    return line.endswith(b"\r\n") and b"\r" not in body and b"\n" not in body
