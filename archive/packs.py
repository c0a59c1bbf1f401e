"""Append-only, zstd-compressed blob packs addressed by SHA-256.

Theory of operation. A pack is a file `packs/pack-NNNNNN.mtp`: an 8-byte file magic, then
records. A record is a chunk of up to ~1 MiB of consecutive blobs compressed together as one
zstd frame (mail compresses far better in company: repeated headers, quoted replies): a
fixed header (record magic, blob count, raw total, compressed length), a table of
(SHA-256, raw length) per blob, then the frame. A blob is addressed by (pack, record
offset, record length, offset inside the decompressed chunk). Records are
self-describing, so a pack can be scanned and verified without the catalog (index
rebuild, disaster recovery). Reading one message decompresses its chunk (~1 ms); the
reader keeps the last chunk so sequential reads (export) decompress each chunk once.

Packs are only ever appended to. The catalog is the commit point: a blob "exists" once a
catalog row points at its (pack, offset, length). Bytes past the last committed record
are left-overs of a crash between `sync()` and the catalog commit; `PackWriter` truncates
them away when it opens (the caller holds the archive write lock), so a rerun appends the
blob again at the same place and nothing is duplicated.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from archive.durable import fsync_dir
from archive.errors import ArchiveError

if TYPE_CHECKING:
    import zstandard

# zstandard and hashlib (OpenSSL) are imported where blobs are read or written: opening an
# archive to search it reads no blob (`proxy-admin search` start-up, issue 12 item 4).

FILE_MAGIC = b"MTPACK1\n"
RECORD_MAGIC = b"MTC1"
#: magic, blob count, raw total, compressed length
RECORD_HEADER = struct.Struct(">4sIQQ")
#: per blob: sha256 (raw 32 bytes), raw length
ENTRY = struct.Struct(">32sQ")
#: Close a chunk once it holds this many raw bytes.
CHUNK_BYTES = 1 << 20
#: Start a new pack past this size, so backups and copies move manageable files.
MAX_PACK_BYTES = 1 << 30
ZSTD_LEVEL = 3


class PackError(ArchiveError):
    """A blob cannot be read back intact (missing pack, bad record, hash mismatch)."""


@dataclass(slots=True)
class BlobRef:
    pack: int
    offset: int  # of the record (chunk)
    length: int  # of the whole record: header + table + frame
    inner: int  # offset of the blob inside the decompressed chunk
    size: int  # raw length of the blob


def pack_name(number: int) -> str:
    return f"pack-{number:06d}.mtp"


class PackReader:
    """Reads blobs back; safe to use while a writer appends (records never move)."""

    def __init__(self, packs_dir: Path) -> None:
        self.dir = packs_dir
        # A ZstdDecompressor must not be used by two threads at once (the web side reads
        # from many): one per thread.
        self._local = threading.local()
        self._cache: tuple[tuple[int, int], bytes] | None = None

    @property
    def _dctx(self) -> zstandard.ZstdDecompressor:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            import zstandard

            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx

    def _chunk(self, ref: BlobRef) -> bytes:
        import zstandard

        key = (ref.pack, ref.offset)
        cache = self._cache  # one read: another thread may replace it meanwhile
        if cache is not None and cache[0] == key:
            return cache[1]
        path = self.dir / pack_name(ref.pack)
        where = f"{path.name}@{ref.offset}"
        try:
            with open(path, "rb") as f:
                record = os.pread(f.fileno(), ref.length, ref.offset)
        except OSError as e:
            raise PackError(f"{path}: cannot read: {e.strerror}") from None
        if len(record) < RECORD_HEADER.size:
            raise PackError(f"{where}: record is truncated")
        magic, count, raw_total, comp_len = RECORD_HEADER.unpack_from(record)
        frame_at = RECORD_HEADER.size + count * ENTRY.size
        if magic != RECORD_MAGIC or len(record) != frame_at + comp_len:
            raise PackError(f"{where}: not a blob record")
        try:
            raw = self._dctx.decompress(record[frame_at:], max_output_size=raw_total)
        except zstandard.ZstdError as e:
            raise PackError(f"{where}: cannot decompress: {e}") from None
        if len(raw) != raw_total:
            raise PackError(f"{where}: chunk has the wrong length")
        self._cache = (key, raw)
        return raw

    def read(self, ref: BlobRef, sha256: str) -> bytes:
        import hashlib

        chunk = self._chunk(ref)
        blob = chunk[ref.inner : ref.inner + ref.size]
        if len(blob) != ref.size or hashlib.sha256(blob).hexdigest() != sha256:
            raise PackError(
                f"{pack_name(ref.pack)}@{ref.offset}+{ref.inner}: "
                "content does not match its SHA-256"
            )
        return blob

    def scan(self, number: int) -> Iterator[tuple[BlobRef, str]]:
        """Yield (BlobRef, sha256) for every blob of every complete record of one pack."""
        path = self.dir / pack_name(number)
        with open(path, "rb") as f:
            if f.read(len(FILE_MAGIC)) != FILE_MAGIC:
                raise PackError(f"{path}: not a mailtee pack")
            offset = len(FILE_MAGIC)
            while True:
                head = f.read(RECORD_HEADER.size)
                if len(head) < RECORD_HEADER.size:
                    return
                magic, count, _raw_total, comp_len = RECORD_HEADER.unpack(head)
                if magic != RECORD_MAGIC:
                    return
                table = f.read(count * ENTRY.size)
                if len(table) < count * ENTRY.size:
                    return
                f.seek(comp_len, os.SEEK_CUR)
                length = RECORD_HEADER.size + len(table) + comp_len
                inner = 0
                for i in range(count):
                    digest, size = ENTRY.unpack_from(table, i * ENTRY.size)
                    yield BlobRef(number, offset, length, inner, size), digest.hex()
                    inner += size
                offset += length

    def numbers(self) -> list[int]:
        out = []
        for p in self.dir.glob("pack-*.mtp"):
            try:
                out.append(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(out)


class PackWriter:
    """Appends blobs to the newest pack. Only the holder of the archive write lock uses it.

    `committed_ends` maps pack number -> end offset of its last committed record (from
    the catalog); anything beyond is cut off here.
    """

    def __init__(self, packs_dir: Path, committed_ends: dict[int, int], level: int = ZSTD_LEVEL):
        import zstandard

        self.dir = packs_dir
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._fd: int | None = None
        self._dirty = False
        self._pending: list[tuple[bytes, str, BlobRef]] = []
        self._pending_size = 0
        numbers = PackReader(packs_dir).numbers()
        for n in numbers:  # cut uncommitted tails (crash between sync and catalog commit)
            end = committed_ends.get(n, len(FILE_MAGIC))
            path = self.dir / pack_name(n)
            if path.stat().st_size > end:
                os.truncate(path, end)
        self.number = numbers[-1] if numbers else 0
        self.offset = 0
        if self.number:
            self._open(self.number)
        else:
            self._new_pack()

    def _open(self, number: int) -> None:
        self._fd = os.open(self.dir / pack_name(number), os.O_RDWR)
        self.offset = os.lseek(self._fd, 0, os.SEEK_END)

    def _new_pack(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
        self.number += 1
        path = self.dir / pack_name(self.number)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(self._fd, FILE_MAGIC)
        os.fsync(self._fd)
        fsync_dir(self.dir)
        self.offset = len(FILE_MAGIC)

    def append(self, raw: bytes, sha256: str) -> BlobRef:
        """Queue a blob; its BlobRef is filled in when its chunk is written."""
        ref = BlobRef(0, 0, 0, self._pending_size, len(raw))
        self._pending.append((raw, sha256, ref))
        self._pending_size += len(raw)
        if self._pending_size >= CHUNK_BYTES:
            self._write_chunk()
        return ref

    def _write_chunk(self) -> None:
        if not self._pending:
            return
        if self.offset >= MAX_PACK_BYTES:
            self._new_pack()
        assert self._fd is not None
        frame = self._cctx.compress(b"".join(raw for raw, _, _ in self._pending))
        head = RECORD_HEADER.pack(RECORD_MAGIC, len(self._pending), self._pending_size, len(frame))
        table = b"".join(ENTRY.pack(bytes.fromhex(sha), len(raw)) for raw, sha, _ in self._pending)
        data = memoryview(head + table + frame)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self.offset + written)
        for _, _, ref in self._pending:
            ref.pack, ref.offset, ref.length = self.number, self.offset, len(data)
        self.offset += len(data)
        self._pending, self._pending_size = [], 0
        self._dirty = True

    def sync(self) -> None:
        """Write the open chunk and make every record durable (before the catalog commit)."""
        self._write_chunk()
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
