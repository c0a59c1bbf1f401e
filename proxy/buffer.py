"""A receive buffer that hands out CRLF-terminated lines with a hard length limit.

Lines are split at LF; the caller gets the whole line including its terminator so it can
relay the exact bytes. A line longer than `max_line` is never accumulated: the buffer
returns `TOO_LONG` once and silently drops the rest of that line, so a peer cannot grow
our memory by withholding the newline. The search offset remembers how far we already
looked, so feeding a long line in many small chunks stays linear.
"""

from __future__ import annotations

from typing import Final


class _TooLong:
    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG: Final = _TooLong()


class LineBuffer:
    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._searched = 0  # bytes of _buf known to contain no LF
        self._discarding = False  # inside the tail of an overlong line

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_line(self) -> bytes | _TooLong | None:
        """The next complete line (with its LF), TOO_LONG, or None if more data is needed."""
        while True:
            nl = self._buf.find(b"\n", self._searched)
            if nl < 0:
                self._searched = len(self._buf)
                if self._discarding:
                    self._buf.clear()
                    self._searched = 0
                    return None
                if len(self._buf) > self.max_line:
                    self._buf.clear()
                    self._searched = 0
                    self._discarding = True
                    return TOO_LONG
                return None
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            self._searched = 0
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self.max_line:
                return TOO_LONG
            return line

    def take(self) -> bytes:
        """Everything buffered, raw (for switching to DATA/TLS handling)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._searched = 0
        return data
