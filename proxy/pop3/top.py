"""Does a TOP response hold the whole message? (DESIGN invariant 1; issue 10 item 1)

Theory of operation. `TOP n L` (RFC 1939 section 7) returns the headers, the blank line
and the first L lines of the body. When the body has at most L lines, the response *is*
the message, and a client that DELEs afterwards (fetchmail's default configuration uses
`TOP n 99999999`) has downloaded it as surely as with RETR. So the relay captures every
TOP response like a RETR and decides at its end, from two independent signals:

- the body ended before the line count: fewer than L body lines arrived (a message with
  no blank line has no body: zero lines); and
- the size: the unstuffed response reached the message's size as LIST reports it
  (RFC 1939 section 5, "the exact size of the message in octets"). This covers L equal
  to the body's line count exactly, where the line count alone cannot tell.

Either signal makes it whole; an unparsable line count counts as "all lines" (never
under-archive). The relay knows the LIST size because it learns sizes from every LIST
reply the client asked for, and asks `LIST n` itself before relaying a TOP for a message
it has no size for (the reply is not passed to the client).

`TopWatch` sees the unstuffed data in chunks of any split; its state is three numbers
and at most three bytes of look-behind.
"""

from __future__ import annotations

_SEPARATOR = b"\r\n\r\n"


class TopWatch:
    """Counts the body lines and octets of one TOP response's (unstuffed) data."""

    def __init__(self, lines: int | None, list_size: int | None) -> None:
        self.lines = lines  # None: not a number we understand -> treat as unlimited
        self.list_size = list_size
        self.size = 0
        self.body_lines = 0
        self._in_body = False
        # The last bytes seen (to find the separator and CRLFs across chunk boundaries);
        # starts as a CRLF: the status line's, so data beginning with CRLF has no headers.
        self._tail = b"\r\n"

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        buf = self._tail + data
        start = len(self._tail)
        if not self._in_body:
            sep = buf.find(_SEPARATOR)
            if sep < 0:
                self._tail = buf[-3:]
                return
            self._in_body = True
            start = sep + len(_SEPARATOR)
            buf_body = buf[start:]
            self.body_lines += buf_body.count(b"\r\n")
            self._tail = buf[-3:]
            return
        # A CRLF split across chunks: its CR is the last byte of the tail.
        self.body_lines += buf[start - 1 :].count(b"\r\n")
        self._tail = buf[-3:]

    def whole(self) -> bool:
        """Call at the end of the response: was it the whole message?"""
        if self.lines is None or self.body_lines < self.lines:
            return True
        return self.list_size is not None and self.size >= self.list_size
