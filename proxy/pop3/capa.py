"""The CAPA reply rewrite (RFC 2449 section 5): the only reply text mailtee changes.

Theory of operation. The upstream's capability list is relayed line by line, verbatim,
except for `STLS` (RFC 2595 section 4): the client can never use the upstream's STLS
through the proxy (the relay answers STLS itself), so that line is always dropped, and
the proxy's own `STLS` is added when the listener offers STARTTLS and the client is not
on TLS yet. USER, SASL and the rest pass unchanged: POP3 clients need USER even before
TLS, and the upstream decides what it accepts. The rewriter consumes the wire form
(still byte-stuffed) that `MultilineReader` releases and returns complete lines.
"""

from __future__ import annotations

from proxy.buffer import LineBuffer

STLS_CAPABILITY = b"STLS\r\n"


def capability_name(wire_line: bytes) -> bytes:
    """The capability keyword of one CAPA data line, upper-cased (RFC 2449 section 6)."""
    line = wire_line[1:] if wire_line.startswith(b".") else wire_line
    words = line.split(None, 1)
    return words[0].upper() if words else b""


class CapaRewriter:
    def __init__(self, *, offer_stls: bool, line_limit: int) -> None:
        self._offer_stls = offer_stls
        self._limit = line_limit
        self._lines = LineBuffer()

    def feed(self, wire: bytes) -> bytes:
        """Complete rewritten lines of `wire` (LineTooLong for a hostile line)."""
        self._lines.feed(wire)
        out = []
        while (line := self._lines.take_line(self._limit)) is not None:
            if capability_name(line) != b"STLS":
                out.append(line)
        return b"".join(out)

    def finish(self) -> bytes:
        """What goes before the terminating line: left-overs and the proxy's STLS."""
        tail = self._lines.take_all()  # empty for a well-formed reply (data ends in CRLF)
        if self._offer_stls:
            tail += STLS_CAPABILITY
        return tail
