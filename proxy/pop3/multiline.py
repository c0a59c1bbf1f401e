"""POP3 multi-line responses (RFC 1939 section 3): the one dot-stuffing reader
(proxy/dotstuff.py), which releases the data lines (`wire`, as received, for the client;
`data`, unstuffed, for the copy) and never the final ".\\r\\n", which the relay sends
itself when it decides to (for RETR and a whole-message TOP: only after the copy is
durable). Only CRLF "." CRLF ends the data: a bare LF or CR never does (DESIGN
invariant 3).
"""

from __future__ import annotations

from proxy.dotstuff import DotChunk, DotReader, stuff

__all__ = ["BodyChunk", "MultilineReader", "stuff"]

BodyChunk = DotChunk
MultilineReader = DotReader
