"""The spool journal of one worker: recycled segments of framed records (a WAL).

Theory of operation. A spool area (`state_dir/spool/w<N>/`) holds a few segment files,
`journal-NNNNNNNN.wal`. Each starts with a 4 KiB header block naming its state (active
or free) and its *generation*, a number that grows every time any segment of the area is
(re)started. Records follow the header:

    "MTJR" | gen u64 | hlen u32 | dlen u32 | crc32 u32 | header JSON (hlen) | data (dlen)

The CRC covers the generation, both lengths and the header JSON; the data (the message
bytes, for a message kept in memory) is covered by the SHA-256 and size the header's
report document carries. A segment is written front to back by one thread; a barrier is
one `fdatasync` of it. Once every message a segment holds has its `.eml`/`.mpr` pair
written and flushed, the segment is marked free (header rewritten, flushed) and later
*recycled*: written again from the front under a new generation. Overwriting blocks that
are already allocated means a barrier commits no size or extent metadata (measured on
the development VM's ext4: fdatasync p50 0.17 ms instead of 0.28-0.33 ms for an append).

Reading a segment (`parse_segment`) stops at the first record that is not complete and
of this generation: a torn tail (bad CRC, short data, SHA-256 mismatch) or the first old
record of an earlier use of the file. Neither was covered by a completed barrier of this
generation, so neither was acknowledged. Records never straddle a barrier they were not
written before, and a batch's records are written in order, so nothing valid follows the
first invalid one.

`encode_record`/`parse_journal` read and write the format of the previous release
(append-only JSON lines in `journal-NNNNNNNN.log`); recovery still replays such files.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

from archive.durable import fsync_dir
from archive.libc import function, libc

JOURNAL_MODE = 0o640
HEADER_SIZE = 4096
SEG_MAGIC = b"MTJS"
REC_MAGIC = b"MTJR"
_SEG = struct.Struct("<4sBQI")  # magic, state, gen, crc
_REC = struct.Struct("<4sQIII")  # magic, gen, hlen, dlen, crc
_REC_CRC = struct.Struct("<QII")
STATE_FREE = 0
STATE_ACTIVE = 1
#: a segment takes new records until it holds this many bytes or records
SEGMENT_BYTES = 16 * 1024 * 1024
SEGMENT_RECORDS = 4096
#: free segments kept for recycling beyond this are deleted
MAX_FREE = 6
SUFFIX = ".wal"
LEGACY_SUFFIX = ".log"

Record = tuple[str, dict[str, Any], bytes | None]
#: where a record was written: segment file, offset of its header, header and data lengths
RecordAt = tuple[str, int, int, int]


def segment_path(area: Path, number: int, suffix: str = SUFFIX) -> Path:
    return area / f"journal-{number:08d}{suffix}"


def segment_numbers(area: Path, suffix: str = SUFFIX) -> list[int]:
    out: list[int] = []
    try:
        names = os.listdir(area)
    except OSError:
        return out
    for name in names:
        if name.startswith("journal-") and name.endswith(suffix):
            try:
                out.append(int(name[8 : -len(suffix)]))
            except ValueError:
                pass
    return sorted(out)


def encode_header(state: int, gen: int) -> bytes:
    crc = zlib.crc32(struct.pack("<BQ", state, gen))
    return _SEG.pack(SEG_MAGIC, state, gen, crc).ljust(HEADER_SIZE, b"\0")


def decode_header(buf: bytes) -> tuple[int, int] | None:
    """(state, generation) of a segment header, or None when it is not one."""
    if len(buf) < _SEG.size:
        return None
    magic, state, gen, crc = _SEG.unpack_from(buf)
    if magic != SEG_MAGIC or crc != zlib.crc32(struct.pack("<BQ", state, gen)):
        return None
    return state, gen


def encode_frame(
    gen: int, stem: str, doc: dict[str, Any], data: bytes | memoryview | None
) -> list[bytes | memoryview]:
    """One record as buffers to write (the message bytes are not copied)."""
    header: dict[str, Any] = {"m": stem, "doc": doc}
    if data is None:
        header["file"] = True
    head = json.dumps(header, ensure_ascii=False).encode()
    dlen = len(data) if data else 0
    crc = zlib.crc32(head, zlib.crc32(_REC_CRC.pack(gen, len(head), dlen)))
    out: list[bytes | memoryview] = [_REC.pack(REC_MAGIC, gen, len(head), dlen, crc), head]
    if data:
        out.append(data)
    return out


def holds_message(doc: dict[str, Any], data: bytes) -> bool:
    """`data` is the message `doc` (its report) describes: the recorded size and SHA-256.

    The one test of a journalled message's bytes: replay (a torn record), recovery (a
    large message's own file) and the pair writer (what it read back) all use it."""
    return len(data) == doc.get("size") and hashlib.sha256(data).hexdigest() == doc.get("sha256")


def parse_segment(buf: bytes) -> tuple[int, int, list[Record]]:
    """(state, generation, the complete records of this generation in order)."""
    hdr = decode_header(buf[:HEADER_SIZE])
    if hdr is None:
        return STATE_FREE, 0, []
    state, gen = hdr
    out: list[Record] = []
    pos = HEADER_SIZE
    view = memoryview(buf)
    while pos + _REC.size <= len(buf):
        magic, rgen, hlen, dlen, crc = _REC.unpack_from(buf, pos)
        if magic != REC_MAGIC or rgen != gen:
            break
        start = pos + _REC.size
        end = start + hlen + dlen
        if end > len(buf):
            break
        head = bytes(view[start : start + hlen])
        if crc != zlib.crc32(head, zlib.crc32(_REC_CRC.pack(rgen, hlen, dlen))):
            break
        try:
            header = json.loads(head)
            stem, doc = header["m"], header["doc"]
            if not isinstance(stem, str) or not isinstance(doc, dict):
                break
        except (ValueError, KeyError, TypeError):
            break
        if header.get("file"):
            out.append((stem, doc, None))
        else:
            data = bytes(view[start + hlen : end])
            if not holds_message(doc, data):
                break  # torn: the message bytes did not all reach the disk
            out.append((stem, doc, data))
        pos = end
    return state, gen, out


# --- the format of the previous release (append-only JSON lines) ------------------------


def encode_record(stem: str, doc: dict[str, Any], data: bytes | None) -> bytes:
    """A record of the previous release's journal (`journal-*.log`), still replayed."""
    header: dict[str, Any] = {"m": stem, "doc": doc, "len": len(data) if data else 0}
    if data is None:
        header["file"] = True
    head = (json.dumps(header, ensure_ascii=False) + "\n").encode()
    return head + (data or b"") + b"\n"


def parse_journal(buf: bytes) -> list[Record]:
    """The complete records of a segment in either format, in order."""
    if buf[:4] == SEG_MAGIC:
        return parse_segment(buf)[2]
    out: list[Record] = []
    pos = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            break
        try:
            header = json.loads(buf[pos:nl])
            stem, doc, n = header["m"], header["doc"], int(header.get("len", 0))
            if not isinstance(stem, str) or not isinstance(doc, dict) or n < 0:
                break
        except (ValueError, KeyError, TypeError):
            break
        start, end = nl + 1, nl + 1 + n
        if buf[end : end + 1] != b"\n":
            break
        out.append((stem, doc, None if header.get("file") else buf[start:end]))
        pos = end + 1
    return out


# --- flushing written files -------------------------------------------------------------

SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing `fd`'s dirty pages now (no wait; Linux only)."""
    lib = libc()
    if lib is not None and hasattr(lib, "sync_file_range"):
        lib.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE)


def _syncfs_reports_errors() -> bool:
    """syncfs(2) returns writeback errors only since Linux 5.8; before, it said 0."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


_SYNCFS: bool | None = None


def flush_filesystem(directory: Path) -> bool:
    """Make everything written to `directory`'s file system durable: one syncfs(2).

    Retiring a journal segment needs every pair it covers on disk. One syncfs instead
    of an open + writeback + fdatasync + close per file: measured, 7 % less CPU per
    SMTP message (fewer system calls, so fewer GIL hand-offs with the event loop) and
    ~10x less time retiring (POP3, 50 KB). It also waits for other programs' dirty
    pages on that file system, which only delays the segment's reuse: never an
    acknowledgement (the barrier stays the journal's own fdatasync). False when
    syncfs is unavailable or cannot report errors (the caller flushes file by file).
    Raises OSError on a writeback error.
    """
    global _SYNCFS
    if _SYNCFS is None:
        _SYNCFS = function("syncfs") and _syncfs_reports_errors()
    if not _SYNCFS:
        return False
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc().syncfs(fd) != 0:  # type: ignore[union-attr]
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return True


def flush_files(paths: list[Path], directory: Path) -> None:
    """Make exactly these files (and their names in `directory`) durable.

    Writeback of all of them is started first, then each is fdatasync'd: the first
    flush commits the file system journal for all of them, so the rest mostly wait for
    their own data. A file that is gone (ingest took the pair) needs nothing.
    """
    fds: list[int] = []
    try:
        for p in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            fds.append(fd)
            start_writeback(fd)
        for fd in fds:
            os.fdatasync(fd)
    finally:
        for fd in fds:
            os.close(fd)
    fsync_dir(directory)


# --- the writer ---------------------------------------------------------------------------


class Journal:
    """The recycled segments of one spool area.

    `append` and `sync` are called from the committer thread only; `release` (a segment
    whose reports are all durable) from the report writer's thread. The pool of free
    segments is shared under a lock.
    """

    def __init__(self, area: Path) -> None:
        self.area = area
        self.area.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._free: list[int] = []
        self.gen = 0
        self._next_number = 1
        for n in segment_numbers(area):
            self._next_number = max(self._next_number, n + 1)
            try:
                with open(segment_path(area, n), "rb") as f:
                    hdr = decode_header(f.read(HEADER_SIZE))
            except OSError:
                continue
            if hdr is not None:
                self.gen = max(self.gen, hdr[1])
                if hdr[0] == STATE_FREE:
                    self._free.append(n)
        self.seq = 0  # the segment number being written (0: none yet)
        self.path = ""  # ... and its file
        self.fd: int | None = None
        self.offset = 0
        self.records = 0
        self._dirty: list[int] = []  # fds written since the last sync (full segments too)
        self._retired_fds: list[int] = []
        self._new_file = False
        #: segments no longer written (switched away from, or broken), not yet reported
        self.closed: list[int] = []
        self._unsynced: list[tuple[int, int]] = []  # (fd, offset) of records since the barrier

    def _start_segment(self) -> None:
        with self._lock:
            number = self._free.pop(0) if self._free else 0
        path = segment_path(self.area, number) if number else None
        if number and path is not None:
            fd = os.open(path, os.O_RDWR)
        else:
            number = self._next_number
            self._next_number += 1
            path = segment_path(self.area, number)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, JOURNAL_MODE)
            self._new_file = True
        self.gen += 1
        os.pwrite(fd, encode_header(STATE_ACTIVE, self.gen), 0)
        self.seq, self.fd, self.offset, self.records = number, fd, HEADER_SIZE, 0
        self.path = os.fspath(path)
        self._dirty.append(fd)

    def append(
        self, stem: str, doc: dict[str, Any], data: bytes | memoryview | None
    ) -> tuple[int, RecordAt]:
        """Write one record (no flush yet); returns the segment number it is in and where
        in that segment's file it is (the pair writer reads the message back from there)."""
        size = _REC.size + (len(data) if data else 0) + 512
        if (
            self.fd is None
            or self.records >= SEGMENT_RECORDS
            or (self.records and self.offset + size > SEGMENT_BYTES)
        ):
            if self.fd is not None:
                self._retired_fds.append(self.fd)  # closed after the next sync
                self.closed.append(self.seq)
            self._start_segment()
        assert self.fd is not None
        bufs = encode_frame(self.gen, stem, doc, data)
        at = (self.path, self.offset + _REC.size, len(bufs[1]), len(data) if data else 0)
        self._unsynced.append((self.fd, self.offset))
        n = os.pwritev(self.fd, bufs, self.offset)
        want = sum(len(b) for b in bufs)
        if n != want:  # a short write: finish it
            rest = b"".join(bufs)[n:]
            while rest:
                rest = rest[os.pwrite(self.fd, rest, self.offset + want - len(rest)) :]
        self.offset += want
        self.records += 1
        return self.seq, at

    def sync(self) -> None:
        """The barrier: fdatasync every segment written since the last barrier."""
        dirty, self._dirty = self._dirty, []
        if self.fd is not None and self.fd not in dirty:
            dirty.append(self.fd)
        for fd in dirty:
            os.fdatasync(fd)
        self._unsynced = []
        if self._new_file:
            fsync_dir(self.area)
            self._new_file = False
        for fd in self._retired_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._retired_fds = []

    def broken(self) -> None:
        """After a failed write or sync: never append to that segment again (it keeps
        its generation: its flushed records stay valid for recovery). The records of
        the failed batch are defaced (best effort) so that no later replay restores a
        message whose client was dropped."""
        for fd, offset in self._unsynced:
            try:
                os.pwrite(fd, bytes(_REC.size), offset)
            except OSError:
                pass
        self._unsynced = []
        for old in [self.fd, *self._retired_fds]:
            if old is not None:
                try:
                    os.close(old)
                except OSError:
                    pass
        if self.fd is not None:
            self.closed.append(self.seq)
        self.fd, self._retired_fds, self._dirty = None, [], []
        self.seq = 0

    def close(self) -> None:
        self.broken()

    def free_count(self) -> int:
        with self._lock:
            return len(self._free)

    def prepare(self) -> None:
        """Add one pre-zeroed segment to the pool (blocking; a background thread).

        Written with zeros and flushed once, so that the barriers of its first use are
        overwrites too, like those of a recycled segment."""
        with self._lock:
            number = self._next_number
            self._next_number += 1
        path = segment_path(self.area, number)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, JOURNAL_MODE)
        try:
            os.write(fd, encode_header(STATE_FREE, self.gen))
            zeros = bytes(1 << 20)
            left = SEGMENT_BYTES + (1 << 20) - HEADER_SIZE  # room for the last record
            while left > 0:
                left -= os.write(fd, zeros[: min(left, len(zeros))])
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self.area)
        with self._lock:
            self._free.append(number)

    def take_closed(self) -> list[int]:
        closed, self.closed = self.closed, []
        return closed

    def release(self, number: int) -> None:
        """Mark a segment free (its reports are durable); recycle or delete it. Any thread."""
        path = segment_path(self.area, number)
        with self._lock:
            keep = len(self._free) < MAX_FREE
        if not keep:
            path.unlink(missing_ok=True)
            return
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, encode_header(STATE_FREE, self.gen), 0)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._free.append(number)
