"""Read an archived message as a stream of chunks, so a 50 MB attachment never sits in memory.

`Archive.get_raw` decompresses a whole pack record and returns the message as one bytes
object: right for the CLI and for the small messages that make up most mail, wrong for
a web server where several people may download large attachments at once. `open_blob`
returns a file-like reader over the same record that decompresses as it is read
(zstd streaming, bounded window) and hashes what it hands out; `verify()` after the
last byte tells whether the message matched its SHA-256.

Small messages (below `SMALL_BLOB`) are read whole through `Archive.get_raw`, which
checks the hash before the first byte goes out.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, BinaryIO

import zstandard

from archive.packs import ENTRY, RECORD_HEADER, RECORD_MAGIC, pack_name
from archive.store import Archive, ArchiveError
from web.errors import WebError

#: Messages up to this size are read whole (and hash-checked before use).
SMALL_BLOB = 4 * 1024 * 1024
CHUNK = 64 * 1024


class BlobHashError(WebError, ArchiveError):
    """The bytes read back do not match the message's SHA-256 (damaged pack)."""


class BlobReader(io.RawIOBase):
    """A read-only stream over one blob inside a zstd-compressed pack record."""

    def __init__(self, path: str, offset: int, length: int, inner: int, size: int, sha: str):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        head = os.pread(self._file.fileno(), RECORD_HEADER.size, offset)
        if len(head) < RECORD_HEADER.size:
            self._file.close()
            raise ArchiveError(f"{path}@{offset}: record is truncated")
        magic, count, _raw_total, comp_len = RECORD_HEADER.unpack(head)
        if magic != RECORD_MAGIC:
            self._file.close()
            raise ArchiveError(f"{path}@{offset}: not a blob record")
        self._file.seek(offset + RECORD_HEADER.size + count * ENTRY.size)
        self._z = zstandard.ZstdDecompressor().stream_reader(self._file, read_across_frames=False)
        self._skip = inner
        self._left = size
        self._hash = hashlib.sha256()
        self._sha = sha

    def readable(self) -> bool:
        return True

    def _skip_prefix(self) -> None:
        while self._skip:
            got = self._z.read(min(self._skip, CHUNK))
            if not got:
                raise ArchiveError("blob record ends early")
            self._skip -= len(got)

    def readinto(self, buf: Any) -> int:
        self._skip_prefix()
        if self._left <= 0:
            return 0
        want = min(len(buf), self._left)
        data = self._z.read(want)
        if not data:
            raise ArchiveError("blob record ends early")
        n = len(data)
        buf[:n] = data
        self._left -= n
        self._hash.update(data)
        return n

    def verify(self) -> None:
        """Raise BlobHashError unless every byte was read and they match the SHA-256."""
        if self._left or self._hash.hexdigest() != self._sha:
            raise BlobHashError("the archived message does not match its SHA-256")

    def close(self) -> None:
        if not self.closed:
            self._z.close()
            self._file.close()
        super().close()


class _Whole(io.BytesIO):
    """A small, already hash-checked blob with the same interface as BlobReader."""

    def verify(self) -> None:
        return None


def blob_size(archive: Archive, message_id: int) -> int:
    row = archive.catalog.one("SELECT size FROM messages WHERE id = ?", (message_id,))
    if row is None:
        raise ArchiveError(f"no archived message {message_id}")
    return int(row["size"])


def open_blob(archive: Archive, message_id: int) -> BinaryIO:
    """A reader over the exact archived bytes of a message (call `.verify()` at the end)."""
    row = archive.catalog.one("SELECT * FROM messages WHERE id = ?", (message_id,))
    if row is None:
        raise ArchiveError(f"no archived message {message_id}")
    if row["size"] <= SMALL_BLOB:
        return _Whole(archive.get_raw(message_id))  # type: ignore[return-value]
    path = str(archive.packs.dir / pack_name(row["pack"]))
    try:
        reader = BlobReader(
            path, row["offset"], row["length"], row["inner"], row["size"], row["sha256"]
        )
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read: {e.strerror}") from None
    return io.BufferedReader(reader, CHUNK)  # type: ignore[return-value]


def verify(stream: BinaryIO) -> None:
    raw = getattr(stream, "raw", stream)
    raw.verify()
