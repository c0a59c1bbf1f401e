"""Group commit: many messages, one durability barrier; reports written once, off the ack path.

Theory of operation (DESIGN "Durable path"). A worker process has one `GroupCommitter`
with its own spool area (`state_dir/spool/w<N>/`). A session that has a whole message
calls `await commit(writer)`; the call returns only after a barrier that covers the
message has completed. Between barriers, commits queue up; the commit task takes all of
them as one batch and, in one worker thread:
1. writes each message's `.eml` under its final name in the report directory (a message
   over `spool.SPILL_BYTES` already streams into a hidden temp file, renamed now),
2. appends one journal record per message to the spool area's append-only journal:
   the `.mpr` document (outcome "pending") and, for a message kept in memory, its bytes,
3. runs the barrier: fdatasync of the journal (plus, for spilled messages only, their
   files and the report directory first). The `.eml` beside the journal needs no flush
   of its own: after a crash it is rebuilt from the journal.
Only then are the batch's sessions released; meanwhile the next batch accumulates. A
message whose `.eml` cannot be written fails alone; a failed barrier fails the batch
(fail closed: nobody in it is acknowledged) and starts a new journal segment.

The `.mpr` is not written on the hot path at all. The session hands the upstream's
verdict over with `record_outcome()` (no I/O, no wait); the materialiser task writes
each `.mpr` once (temp name + rename, no fsync), with the final outcome, or with
"pending" when none came within `OUTCOME_WAIT` (rewritten if it comes later). Until then
the report directory holds the `.eml` alone, which readers ignore (a pair is committed
once its `.mpr` exists). The journal is what makes that safe: after a crash, `recover()`
rewrites the `.eml` from the journal and writes the `.mpr` ("pending": the outcome is in
doubt) of every complete journal record whose pair is not there, drops records that are
torn or do not match their SHA-256 (never acknowledged: their barrier did not
complete), and then deletes the journal. While running, a journal segment is deleted
once every report in it is written and a `syncfs` made those reports durable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from archive.durable import fsync_dir
from archive.spool import REPORT_MODE, MessageWriter, SpoolError

log = logging.getLogger("mailtee.commit")

#: how long the materialiser waits for the upstream's verdict before writing "pending"
OUTCOME_WAIT = 2.0
#: how often the materialiser looks for reports to write
MATERIALISE_INTERVAL = 0.05
#: a journal segment is closed after this many records or bytes (and deleted once all
#: its reports are written and flushed)
SEGMENT_RECORDS = 4096
SEGMENT_BYTES = 64 * 1024 * 1024
JOURNAL_MODE = 0o640
#: per batch: at most this many messages (bounds the time of one barrier)
MAX_BATCH = 512


def spool_area(state_dir: Path, worker: int) -> Path:
    return state_dir / "spool" / f"w{worker}"


_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.syncfs  # noqa: B018 - probe
        except (OSError, AttributeError):
            _libc = False
    return _libc


def syncfs_fd(fd: int) -> bool:
    """syncfs(2) on `fd`; False when unavailable (the caller flushes file by file)."""
    libc = _load_libc()
    if not libc:
        return False
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def syncfs(path: Path) -> None:
    """Flush the file system holding `path` (Linux syncfs(2); os.sync() elsewhere)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not syncfs_fd(fd):
            os.sync()
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Pending:
    """A committed message whose `.mpr` is not written yet."""

    writer: MessageWriter
    segment: int
    committed_at: float
    outcome: tuple[str, str | None] | None = None
    written: str | None = None  # the outcome the written `.mpr` holds


@dataclass(slots=True)
class _Request:
    writer: MessageWriter
    outcome: str
    reply: str | None
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class Journal:
    """The append-only journal segments of one spool area (used from one thread at a time)."""

    def __init__(self, area: Path) -> None:
        self.area = area
        self.area.mkdir(parents=True, exist_ok=True)
        self.seq = max(segment_numbers(area), default=0)
        self.fd: int | None = None
        self.records = 0
        self.size = 0
        self.new_segment = False

    def _open(self) -> None:
        self.seq += 1
        path = self.area / f"journal-{self.seq:08d}.log"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, JOURNAL_MODE)
        self.records = 0
        self.size = 0
        self.new_segment = True

    def append(self, lines: list[bytes]) -> int:
        """Write framed records (no flush yet); returns the segment they are in."""
        if self.fd is None or self.records >= SEGMENT_RECORDS or self.size >= SEGMENT_BYTES:
            self.close()
            self._open()
        assert self.fd is not None
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.records += len(lines)
        self.size += len(data)
        return self.seq

    def sync(self) -> None:
        assert self.fd is not None
        os.fdatasync(self.fd)
        if self.new_segment:
            fsync_dir(self.area)
            self.new_segment = False

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def broken(self) -> None:
        """After a failed write or sync: never append to that segment again."""
        self.close()


def encode_record(stem: str, doc: dict[str, Any], data: bytes | None) -> bytes:
    """One journal record: a JSON header line, then `len` message bytes and a newline
    (`len` 0 and `"file": true` when the message streamed into its own `.eml`)."""
    header: dict[str, Any] = {"m": stem, "doc": doc, "len": len(data) if data else 0}
    if data is None:
        header["file"] = True
    head = (json.dumps(header, ensure_ascii=False) + "\n").encode()
    return head + (data or b"") + b"\n"


def parse_journal(buf: bytes) -> list[tuple[str, dict[str, Any], bytes | None]]:
    """The complete records of a segment, in order; a torn tail ends the list."""
    out: list[tuple[str, dict[str, Any], bytes | None]] = []
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
            break  # torn: the message bytes did not all reach the disk
        out.append((stem, doc, None if header.get("file") else buf[start:end]))
        pos = end + 1
    return out


def segment_numbers(area: Path) -> list[int]:
    out: list[int] = []
    try:
        names = os.listdir(area)
    except OSError:
        return out
    for name in names:
        if name.startswith("journal-") and name.endswith(".log"):
            try:
                out.append(int(name[8:-4]))
            except ValueError:
                pass
    return sorted(out)


class GroupCommitter:
    """The commit path of one worker process; run `run()` in a nursery before use."""

    def __init__(self, reports_dir: Path, area: Path) -> None:
        self.reports_dir = reports_dir
        self.area = area
        self.journal = Journal(area)
        self._queue: list[_Request] = []
        self._wake = trio.Event()
        self._pending: dict[str, _Pending] = {}
        self._segment_open: dict[int, int] = {}  # segment -> reports not yet written
        self._late: list[tuple[MessageWriter, str, str | None]] = []
        self._retiring: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self.batches = 0
        self.committed = 0
        self.running = False

    # --- the session side (Trio thread, no I/O) -------------------------------------
    async def commit(
        self, writer: MessageWriter, outcome: str = "pending", reply: str | None = None
    ) -> None:
        """Return once a completed barrier covers `writer`'s message. Raises SpoolError.

        With a final `outcome` (POP3: served whole) the report gets it straight away.
        """
        if not self.running:
            raise SpoolError("the commit task is not running")
        req = _Request(writer, outcome, reply)
        self._queue.append(req)
        self._wake.set()
        with trio.CancelScope(shield=True):
            # Once queued, the outcome of the barrier must be waited for: a cancelled
            # session must not leave a half-known message behind.
            await req.done.wait()
        if req.error is not None:
            raise SpoolError(req.error)

    def record_outcome(self, writer: MessageWriter, outcome: str, reply: str | None) -> None:
        """The upstream's verdict for a committed message (written to its `.mpr` soon)."""
        p = self._pending.get(writer.stem)
        if p is not None:
            p.outcome = (outcome, reply)
        elif writer.committed:
            self._late.append((writer, outcome, reply))

    # --- the tasks -------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[GroupCommitter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.running = True
                self._nursery = nursery
                nursery.start_soon(self._materialise_loop)
                task_status.started(self)
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    while self._queue:
                        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                        try:
                            with trio.CancelScope(shield=True):
                                await trio.to_thread.run_sync(self._barrier, batch)
                        except Exception as e:  # a bug must not leave sessions waiting
                            log.error("group commit failed: %r", e, exc_info=True)
                            for req in batch:
                                req.error = req.error or "internal error in the commit path"
                                req.writer.discard_final_eml()
                        self._release(batch)
        finally:
            self.running = False
            for req in self._queue:
                req.error = "the service is stopping"
                req.done.set()
            self._queue = []
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._flush_all)

    def _release(self, batch: list[_Request]) -> None:
        """After the barrier: hand the batch's reports to the materialiser, wake sessions."""
        now = time.monotonic()
        for req in batch:
            if req.error is None:
                seg = req.writer.segment
                p = _Pending(req.writer, seg, now)
                if req.outcome != "pending":
                    p.outcome = (req.outcome, req.reply)
                self._pending[req.writer.stem] = p
                self._segment_open[seg] = self._segment_open.get(seg, 0) + 1
            req.done.set()

    def _barrier(self, batch: list[_Request]) -> None:
        """Worker thread: write the batch's files and journal records, then one barrier."""
        spilled: list[int] = []
        opened: list[int] = []
        records: list[bytes] = []
        good: list[_Request] = []
        for req in batch:
            inline = req.writer.inline_bytes()
            try:
                fd = req.writer.write_final_eml()
            except SpoolError as e:
                req.error = str(e)
                continue
            opened.append(fd)
            if inline is None:
                spilled.append(fd)
            good.append(req)
            records.append(
                encode_record(req.writer.stem, req.writer.document("pending", None), inline)
            )
        error: str | None = None
        try:
            if good:
                seg = self.journal.append(records)
                for req in good:
                    req.writer.segment = seg
                self._flush(spilled)
        except OSError as e:
            self.journal.broken()
            error = f"cannot make the copy durable in {self.reports_dir}: {e.strerror or e}"
        finally:
            for fd in opened:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for req in good:
            if error is not None:
                req.error = error
                req.writer.discard_final_eml()
            else:
                req.writer.committed = True
        if good and error is None:
            self.batches += 1
            self.committed += len(good)

    def _flush(self, spilled: list[int]) -> None:
        """The barrier: one fdatasync of the journal, which holds the bytes of every
        message kept in memory (the `.eml` written beside it is rebuilt from the journal
        after a crash). A message too large for that streamed into its own file: those
        files and the report directory are flushed first."""
        for fd in spilled:
            os.fdatasync(fd)
        if spilled:
            fsync_dir(self.reports_dir)
        self.journal.sync()

    async def _materialise_loop(self) -> None:
        """Write due reports in a thread; all bookkeeping stays on the Trio thread."""
        while True:
            await trio.sleep(MATERIALISE_INTERVAL)
            now = time.monotonic()
            due = [
                (p, p.outcome or ("pending", None))
                for p in self._pending.values()
                if (p.outcome is not None or now - p.committed_at >= OUTCOME_WAIT)
                and p.written != (p.outcome or ("pending",))[0]
            ]
            late, self._late = self._late, []
            if due or late:
                with trio.CancelScope(shield=True):
                    written = await trio.to_thread.run_sync(self._write_reports, due, late)
                for (p, (outcome, _reply)), ok in zip(due, written, strict=True):
                    if not ok:
                        continue
                    if p.written is None:  # its first report: one less in its segment
                        self._segment_open[p.segment] = self._segment_open.get(p.segment, 1) - 1
                    p.written = outcome
                    # an outcome that came while the report was written is written next
                    final = p.outcome is not None and p.written == p.outcome[0]
                    if final or (p.outcome is None and outcome == "pending"):
                        self._pending.pop(p.writer.stem, None)
            current = self.journal.seq
            todo = [
                seg
                for seg, left in self._segment_open.items()
                if left <= 0 and seg != current and seg not in self._retiring
            ]
            if todo and self._nursery is not None:
                # syncfs can take long on a busy disk: never delay the next reports
                self._retiring.update(todo)
                self._nursery.start_soon(self._retire_async, todo)

    async def _retire_async(self, segments: list[int]) -> None:
        try:
            with trio.CancelScope(shield=True):
                done = await trio.to_thread.run_sync(self._retire, segments)
            for seg in done:
                if self._segment_open.get(seg, 0) <= 0:
                    self._segment_open.pop(seg, None)
        finally:
            self._retiring.difference_update(segments)

    def _write_reports(
        self,
        due: list[tuple[_Pending, tuple[str, str | None]]],
        late: list[tuple[MessageWriter, str, str | None]],
    ) -> list[bool]:
        """Worker thread: write each due `.mpr`; True for those written."""
        written = []
        for p, (outcome, reply) in due:
            ok = p.writer.write_mpr(outcome, reply)
            if not ok:
                log.error("cannot write report %s.mpr (kept in the journal)", p.writer.stem)
            written.append(ok)
        for writer, outcome, reply in late:
            if writer.mpr_path.exists():  # ingest may already have removed the pair
                writer.write_mpr(outcome, reply)
        return written

    def _retire(self, segments: list[int]) -> list[int]:
        """Worker thread: make the written reports durable, then drop their segments."""
        try:
            syncfs(self.reports_dir)
        except OSError as e:
            log.error("cannot flush written reports (journal kept): %s", e.strerror)
            return []
        done = []
        for seg in segments:
            try:
                (self.area / f"journal-{seg:08d}.log").unlink(missing_ok=True)
            except OSError:
                continue
            done.append(seg)
        return done

    def _flush_all(self) -> None:
        """At shutdown: write every report still waiting, then retire the journal."""
        for p in self._pending.values():
            outcome, reply = p.outcome or ("pending", None)
            if p.written != outcome:
                p.writer.write_mpr(outcome, reply)
        self._pending.clear()
        self.journal.close()
        try:
            syncfs(self.reports_dir)
            for seg in segment_numbers(self.area):
                (self.area / f"journal-{seg:08d}.log").unlink(missing_ok=True)
        except OSError as e:
            log.error("journal kept for recovery: %s", e.strerror)

    def snapshot(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "committed": self.committed,
            "awaiting_outcome": len(self._pending),
        }


# --- recovery ------------------------------------------------------------------------


def recover(reports_dir: Path, area: Path) -> dict[str, int]:
    """Rebuild the `.mpr` of journalled messages after a crash (blocking; before serving).

    A journalled message whose `.eml` is intact (size and SHA-256 as recorded) gets its
    `.mpr` with outcome "pending" (the verdict is in doubt) unless one exists; one whose
    `.eml` is missing or damaged was never acknowledged (its barrier did not complete)
    and is dropped. Then the journal is deleted.
    """
    import hashlib

    counts = {"restored": 0, "dropped": 0, "present": 0}
    segments = segment_numbers(area)
    if not segments:
        return counts
    reports_dir.mkdir(parents=True, exist_ok=True)
    for seg in segments:
        path = area / f"journal-{seg:08d}.log"
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for stem, doc, raw in parse_journal(data):
            if "/" in stem or stem.startswith(".") or not stem:
                continue
            mpr = reports_dir / f"{stem}.mpr"
            eml = reports_dir / f"{stem}.eml"
            if mpr.exists():
                counts["present"] += 1
                continue
            if raw is None:  # a large message: its own file was flushed before the record
                try:
                    raw = eml.read_bytes()
                except OSError:
                    counts["dropped"] += 1
                    continue
                from_file = True
            else:
                from_file = False
            if len(raw) != doc.get("size") or hashlib.sha256(raw).hexdigest() != doc.get("sha256"):
                if from_file:
                    eml.unlink(missing_ok=True)
                counts["dropped"] += 1
                continue
            if not from_file:
                _write(reports_dir, f"{stem}.eml", raw)
            doc["upstream"] = {"outcome": "pending", "reply": None}
            _write(
                reports_dir, f"{stem}.mpr", (json.dumps(doc, ensure_ascii=False) + "\n").encode()
            )
            counts["restored"] += 1
    syncfs(reports_dir)
    for seg in segments:
        (area / f"journal-{seg:08d}.log").unlink(missing_ok=True)
    fsync_dir(area)
    return counts


def _write(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, REPORT_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
