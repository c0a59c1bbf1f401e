"""The durable report writer: one `.eml` (exact message bytes) + one `.mpr` (JSON report).

Theory of operation. A relay session opens a `MessageWriter` when a message starts and
feeds it the message bytes as they stream past. Nothing is visible under the final
names until `commit()`: the `.eml` is written to a hidden temp name, fsync'd and renamed,
then the `.mpr` (outcome "pending") likewise, then the directory is fsync'd. Only after
`commit()` returns may the relay let the message reach its "sent"/"downloaded" state
(DESIGN invariant 1). `set_outcome()` later replaces the `.mpr` atomically with the
upstream's verdict; it need not be fsync'd because a crash leaves the durable "pending"
report, which ingest treats as "outcome unknown".

The first I/O error is latched: later writes are ignored and `commit()` raises
`SpoolError`, so the relay decides in one place whether to fail closed or pass.
`commit()` and `set_outcome()` block (fsync); call them through `trio.to_thread`.
Hidden (dot) files are work in progress; readers of the report directory skip them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from archive.durable import fsync_dir, write_file
from archive.errors import ArchiveError
from archive.report_sections import SessionReport
from archive.timefmt import iso_millis

MPR_FORMAT = "mailtee-mpr"
MPR_VERSION = 1
OUTCOMES = ("pending", "delivered", "rejected", "unknown")
#: message bytes kept in memory before the temp file is created (bounded per session)
SPILL_BYTES = 256 * 1024
#: reports hold mail: owner read/write, group (e.g. an auditors' group) read, others nothing
REPORT_MODE = 0o640


class SpoolError(ArchiveError):
    """The copy could not be made durable. The message text never contains secrets."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _RandomIds:
    """Version-4 UUIDs from a pool of `os.urandom` bytes: one getrandom call per 256
    messages instead of one per message. The pool is emptied in a forked child, so two
    processes never hand out the same id."""

    POOL = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool, self._at = os.urandom(self.POOL), 0
            raw = self._pool[self._at : self._at + 16]
            self._at += 16
        return str(uuid.UUID(bytes=raw, version=4))


new_id = _RandomIds()


@dataclass
class MessageWriter:
    """Streams one message to a temp file; see the module docstring for the protocol."""

    reports_dir: Path
    protocol: str
    #: a proxied session's typed sections, or (pull, journal) the sections as JSON
    report: SessionReport | dict[str, Any]
    received_at: dt.datetime = field(default_factory=utc_now)
    id: str = field(default_factory=new_id)
    size: int = 0
    error: str | None = None
    committed: bool = False
    #: the journal segment that holds this message's record (archive.commit)
    segment: int = 0

    def __post_init__(self) -> None:
        # The hash of what went to the temp file (a spilled message), and the digest
        # once asked for. A message kept in memory is hashed in one call when its
        # document is built: one GIL release instead of one per chunk (each release let
        # the report writer thread in: bench/commit_path.py).
        self._sha = hashlib.sha256()
        self._digest: str | None = None
        stamp = self.received_at.strftime("%Y%m%dT%H%M%SZ")
        self.stem = f"{stamp}-{self.protocol}-{self.id}"
        # str paths for the report writer's per-message calls: pathlib's `/` cost more
        # than the open() it names (measured: ~25 µs of ~95 per pair, tmpfs)
        self._prefix = f"{os.fspath(self.reports_dir)}/{self.stem}"
        self._file: BinaryIO | None = None
        # Small messages stay in memory until commit() (a worker thread) creates the
        # file: no file-system call on the event loop for the common case.
        self._head = bytearray()
        # The sections as JSON, once (a dict report is used as is: the pull writer
        # still adds to it before commit).
        r = self.report
        self._sections = r.to_json() if isinstance(r, SessionReport) else r

    def _spill(self) -> None:
        """Move the buffered head to the temp file (creating it); latch errors."""
        self._sha.update(self._head)  # first: the hash covers it even if the write fails
        try:
            if self._file is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                self._file = os.fdopen(os.open(self._tmp, flags, REPORT_MODE), "wb")
            self._file.write(self._head)
        except OSError as e:
            self._fail("cannot write message file", e)
        self._head.clear()

    @property
    def _tmp(self) -> Path:
        return self.reports_dir / f".{self.stem}.eml.tmp"

    @property
    def eml_path(self) -> Path:
        return self.reports_dir / f"{self.stem}.eml"

    @property
    def mpr_path(self) -> Path:
        return self.reports_dir / f"{self.stem}.mpr"

    @property
    def sha256(self) -> str:
        """Of every byte written so far (cached until the next write)."""
        if self._digest is None:
            h = self._sha
            if self._head:
                h = h.copy()
                h.update(self._head)
            self._digest = h.hexdigest()
        return self._digest

    def _fail(self, what: str, exc: OSError) -> None:
        if self.error is None:
            reason = exc.strerror or type(exc).__name__
            self.error = f"{what} in {self.reports_dir}: {reason}"

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._digest = None
        if self.error is not None:
            self._sha.update(data)  # kept nowhere, but still counted in the hash
            return
        self._head += data
        if len(self._head) >= SPILL_BYTES:
            self._spill()

    def document(self, outcome: str, reply: str | None) -> dict[str, Any]:
        """The `.mpr` in the key order of docs/mpr-format.md."""
        r = self._sections
        doc: dict[str, Any] = {
            "format": MPR_FORMAT,
            "version": MPR_VERSION,
            "id": self.id,
            "protocol": self.protocol,
            "direction": r.get("direction"),
            "listener": r.get("listener"),
            "received_at": iso_millis(self.received_at),
            "client": r.get("client"),
            "target": r.get("target"),
            "size": self.size,
            "sha256": self.sha256,
            "smtp": r.get("smtp"),
            "pop3": r.get("pop3"),
        }
        doc.update({k: v for k, v in r.items() if k not in doc})
        doc["upstream"] = {"outcome": outcome, "reply": reply}
        return doc

    def _encode(self, outcome: str, reply: str | None) -> bytes:
        return (json.dumps(self.document(outcome, reply), ensure_ascii=False) + "\n").encode()

    def commit(self, outcome: str = "pending", reply: str | None = None) -> None:
        """Make `.eml` + `.mpr` durable. Blocking. Raises SpoolError.

        SMTP commits "pending" before the final dot goes upstream; POP3 commits its
        final outcome ("delivered": the upstream served it whole) in one step.
        """
        if self.error is None:
            self._spill()
        if self.error is None and self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
                os.replace(self._tmp, self.eml_path)
                mpr_tmp = self.reports_dir / f".{self.stem}.mpr.tmp"
                write_file(mpr_tmp, self._encode(outcome, reply), mode=REPORT_MODE, sync=True)
                os.replace(mpr_tmp, self.mpr_path)
                fsync_dir(self.reports_dir)
                self.committed = True
                return
            except OSError as e:
                self._fail("cannot store report", e)
        self.abort()
        raise SpoolError(self.error or "message file was not opened")

    # --- the group-commit path (archive.commit) -------------------------------------
    @property
    def in_memory(self) -> bool:
        """The message is still only in memory (it has not spilled to a file)."""
        return self._file is None and self.error is None

    def inline_bytes(self) -> memoryview | None:
        """The whole message while it is still in memory (None once it spilled).

        A view, not a copy (measured: the 50 KB copy took 25 µs of the commit, page
        faults included); the caller releases it before the buffer may change."""
        if self._file is not None or self.error is not None:
            return None
        return memoryview(self._head)

    def write_final_eml(self) -> int:
        """A message that spilled to its temp file: put it under its final `.eml` name,
        unsynced; return an open fd, which the committer fdatasyncs as part of its
        barrier and closes. Blocking (archive.commit). Raises SpoolError (and forgets
        the message) on any error. (A message kept in memory gets its `.eml` after the
        acknowledgement, from write_committed_eml.)
        """
        if self.error is None:
            try:
                self._spill()
                if self.error is None:
                    assert self._file is not None
                    self._file.flush()
                    fd = os.dup(self._file.fileno())
                    self._file.close()
                    self._file = None
                    os.replace(self._tmp, self.eml_path)
                    return fd
            except OSError as e:
                self._fail("cannot write message file", e)
        self.abort()
        raise SpoolError(self.error or "message file was not opened")

    def write_committed_eml(self) -> None:
        """The report writer's `.eml` of a committed message kept in memory. Blocking.

        Unlike `write_final_eml`, a failure forgets nothing: the bytes stay in memory
        (and in the journal), a partial file is removed, and the next try writes the
        file again from the start (O_TRUNC). Raises OSError.
        """
        assert self.committed and self._file is None
        path = f"{self._prefix}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, REPORT_MODE)
        try:
            with memoryview(self._head) as head:
                view = head
                while view:
                    view = view[os.write(fd, view) :]
                view.release()
        except OSError:
            with contextlib.suppress(OSError):  # the next try truncates it anyway
                os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._head.clear()

    def forget_bytes(self) -> None:
        """A committed message's `.eml` was written elsewhere (archive.pair_writer, from
        the journal): the copy in memory is no longer needed."""
        assert self.committed and self._file is None
        self._head.clear()

    def discard_final_eml(self) -> None:
        """The barrier failed: the message was never acknowledged, drop its file."""
        try:
            self.eml_path.unlink(missing_ok=True)
        except OSError:
            pass

    def write_mpr(self, outcome: str, reply: str | None) -> bool:
        """Write (or replace) the `.mpr` atomically, unsynced. Blocking. False on error."""
        tmp = f"{os.fspath(self.reports_dir)}/.{self.stem}.mpr.tmp"
        try:
            write_file(tmp, self._encode(outcome, reply), mode=REPORT_MODE, sync=False)
            os.replace(tmp, f"{self._prefix}.mpr")
            return True
        except OSError as e:
            self._fail("cannot write report", e)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False

    def set_outcome(self, outcome: str, reply: str | None) -> None:
        """Atomically replace the committed `.mpr` with the final outcome. Blocking.

        On failure the durable pending report stays; ingest reads it as "outcome
        unknown"."""
        assert outcome in OUTCOMES and self.committed
        self.write_mpr(outcome, reply)

    def abort(self) -> None:
        """Forget an uncommitted message (client aborted, upstream lost, refused)."""
        self._sha.update(self._head)  # `sha256` still names what was written (pulls log it)
        self._head.clear()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        if not self.committed:
            try:
                self._tmp.unlink(missing_ok=True)
            except OSError:
                pass


class Spool:
    """The report directory of one state dir."""

    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = reports_dir

    def open_message(self, protocol: str, report: SessionReport | dict[str, Any]) -> MessageWriter:
        """Start a message; `report` holds the protocol sections of the `.mpr`."""
        return MessageWriter(self.reports_dir, protocol, report)

    def cleanup_orphans(self) -> list[Path]:
        """Remove work-in-progress files left by a crash (no client was acknowledged).

        A `.eml` without its `.mpr` was renamed but the crash came before the report
        was durable, so the message never reached its acknowledged state either.
        """
        removed: list[Path] = []
        try:
            entries = list(self.reports_dir.iterdir())
        except OSError:
            return removed
        names = {p.name for p in entries}
        for p in entries:
            orphan = p.name.startswith(".") and p.name.endswith(".tmp")
            if p.suffix == ".eml" and not p.name.startswith("."):
                orphan = f"{p.stem}.mpr" not in names
            if orphan:
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
        return removed
