"""The DATA phase: SMTP's use of the one dot-stuffing reader (proxy/dotstuff.py).

After a 354 the client's bytes go through a `DataReader`: `wire` is relayed upstream as
it arrives, `message` (unstuffed) is the archive copy, and the final ".\\r\\n" is held
back until the copy is durable (DESIGN invariant 1). Bare LF or CR anywhere in DATA is
refused (SMTP smuggling): `bare_newline` says which was seen first.
"""

from __future__ import annotations

from proxy.dotstuff import TERMINATOR, DotChunk, DotReader

__all__ = ["TERMINATOR", "DataChunk", "DataReader"]

DataChunk = DotChunk


class DataReader(DotReader):
    """A DotReader that reports bare CR/LF (SMTP DATA)."""

    def __init__(self) -> None:
        super().__init__(refuse_bare_newlines=True)
