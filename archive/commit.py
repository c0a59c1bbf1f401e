"""Group commit: many messages, one durability barrier; reports written off the ack path.

Theory of operation (DESIGN "Durable path"). A worker process has one `GroupCommitter`
with its own spool area (`state_dir/spool/w<N>/`, archive.journal). A session that has
a whole message calls `await commit(writer)`; the call returns only after a barrier that
covers the message has completed. Commits queue up for the committer's own long-lived
thread, which takes everything queued as one batch and:
1. appends one journal record per message: the `.mpr` document (outcome "pending") and,
   for a message kept in memory (up to `spool.SPILL_BYTES`), its bytes; a message over
   that already streamed into a hidden temp file, which is renamed to its final `.eml`
   name now,
2. runs the barrier: one fdatasync of the journal segment (plus, for spilled messages
   only, their files and the report directory first),
3. hands the batch back to the Trio thread (`run_sync_soon`), which releases the
   sessions. Meanwhile the next batch has been queueing.
A lone commit (the worker serves one session, nothing is queued or in a barrier, the
message is kept in memory, and recent barriers were short) runs steps 1-2 on the Trio
thread itself: with nobody else to serve, blocking the loop for one short flush costs
nobody anything, while the two thread hand-offs it saves (a wake of the committer, a
wake of the loop) cost about as much as the flush. A disk that turns slow (barrier
average over `INLINE_BARRIER_MAX`) sends every commit back to the thread after one slow
barrier (docs/reliability.md says what a disk that stalls outright does then).
A message whose file cannot be written fails alone; a failed barrier fails the batch
(fail closed: nobody in it is acknowledged) and the journal moves to another segment.

The report pair is not written on the hot path at all: the bytes of a message kept in
memory reach the disk once before the acknowledgement, in the journal. The report
writer task then has each `.eml` and each `.mpr` written once (temp name + rename for
the `.mpr`, no fsync), with the final outcome (`record_outcome()`: no I/O, no wait), or
with "pending" when none came within `OUTCOME_WAIT` (rewritten if it comes later). The
writing is done by the worker's pair writer process (archive.pair_writer), which reads
each message and its report document back from the journal record (still in the page
cache): the bookkeeping stays here, on the Trio thread, and the file system calls run
under another interpreter lock. The `.eml` comes first; readers ignore it until its
`.mpr` exists. Memory waiting for the writer is bounded (`MAX_UNWRITTEN`: commits wait
when it is exceeded); a message's bytes are dropped from memory once its `.eml` exists.

A segment is retired once every message it holds has its pair written: the report
directory's file system is flushed (one syncfs, archive.journal.flush_filesystem; file
by file where syncfs cannot report errors: archive.journal.flush_files), then the
segment is marked free and later recycled. After a crash, `recover()` replays every
segment before serving: each complete record of the segment's current generation whose
pair is missing or damaged gets its `.eml` (from the journal) and `.mpr` (outcome
"pending": the verdict is in doubt), the pairs of the segment are flushed, and the
segment is marked free; torn records and old records of a recycled segment were never
acknowledged and are ignored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from archive.durable import fsync_dir
from archive.journal import (
    LEGACY_SUFFIX,
    SEGMENT_BYTES,
    STATE_ACTIVE,
    Journal,
    RecordAt,
    decode_header,
    encode_record,
    flush_files,
    flush_filesystem,
    holds_message,
    parse_journal,
    parse_segment,
    segment_numbers,
    segment_path,
    start_writeback,
)
from archive.pair_process import PairProcess
from archive.spool import REPORT_MODE, MessageWriter, SpoolError

__all__ = [
    "Commit",
    "GroupCommitter",
    "encode_record",
    "live_segments",
    "parse_journal",
    "recover",
    "segment_numbers",
    "spool_area",
]

log = logging.getLogger("mailtee.commit")

#: how long the report writer waits for the upstream's verdict before writing "pending"
OUTCOME_WAIT = 2.0
#: how often the report writer looks for reports to write
MATERIALISE_INTERVAL = 0.02
#: per batch: at most this many messages (bounds the time of one barrier)
MAX_BATCH = 512
#: a lone commit runs on the Trio thread only while barriers average less than this
INLINE_BARRIER_MAX = 0.002
#: message bytes committed but not yet in their `.eml`; beyond it commits wait
MAX_UNWRITTEN = 32 * 1024 * 1024
#: after a failed retire flush the next try waits this long, doubling up to the cap, so a
#: disk that stays broken gets one error line per try, not one per report-writer pass
RETIRE_RETRY_FIRST = 1.0
RETIRE_RETRY_MAX = 60.0
#: likewise after a pass of the report writer in which a pair could not be written: the
#: pairs stay due (their bytes in memory and in the journal) and are tried again then
PAIR_RETRY_FIRST = 1.0
PAIR_RETRY_MAX = 60.0
#: room a pair needs beyond the message bytes (the `.mpr`, block rounding, the temp name)
PAIR_OVERHEAD = 16 * 1024
#: the report directory's room is measured again after this long, or once the batches
#: since the last measurement used ROOM_MARGIN bytes; it is trusted in between only if
#: that measurement left twice the margin and ROOM_INODES inodes free
ROOM_RECHECK = 1.0
ROOM_MARGIN = 256 * 1024 * 1024
ROOM_INODES = 100_000


def spool_area(state_dir: Path, worker: int) -> Path:
    return state_dir / "spool" / f"w{worker}"


def live_segments(area: Path) -> list[int]:
    """The segments of `area` that hold records not yet retired (tests, status)."""
    out = []
    for n in segment_numbers(area):
        try:
            with open(segment_path(area, n), "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        hdr = decode_header(head)
        if hdr is not None and hdr[0] == STATE_ACTIVE:
            out.append(n)
    return out + segment_numbers(area, LEGACY_SUFFIX)


@dataclass(slots=True)
class _Pending:
    """A committed message whose pair is not (finally) written yet."""

    writer: MessageWriter
    segment: int
    committed_at: float
    inline: int  # bytes still only in memory (0: its `.eml` exists)
    #: where its journal record is: segment file, header offset, header and data lengths
    record: RecordAt
    outcome: tuple[str, str | None] | None = None
    written: str | None = None  # the outcome the written `.mpr` holds


@dataclass(slots=True)
class _Request:
    writer: MessageWriter
    outcome: str
    reply: str | None
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    inline: int = 0
    record: RecordAt = ("", 0, 0, 0)


@dataclass(slots=True)
class _Written:
    """A batch between its journal writes and its barrier (GroupCommitter._write_batch)."""

    batch: list[_Request]
    took: float = 0.0  # seconds the writing took
    good: list[_Request] = field(default_factory=list)  # records written
    spilled: list[int] = field(default_factory=list)  # fds of spilled `.eml` files
    error: OSError | None = None  # a write failed: the batch fails at its barrier
    bug: Exception | None = None  # anything else (reported as an internal error)


@dataclass(slots=True)
class Commit:
    """A commit begun (GroupCommitter.begin): pass it to `finish()`."""

    request: _Request
    queued: float
    #: an inline batch whose records are written and whose barrier is still to run
    written: _Written | None = None


class GroupCommitter:
    """The commit path of one worker process; run `run()` in a nursery before use."""

    def __init__(self, reports_dir: Path, area: Path) -> None:
        self.reports_dir = reports_dir
        self.area = area
        self.journal = Journal(area)
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._busy = False  # a batch is being written (thread or inline); under _cond
        self._room_until = 0.0  # _room_problem: trusted until then (monotonic) ...
        self._room_spare = 0  # ... for at most this many more bytes ...
        self._room_dir: tuple[int, ...] = ()  # ... while the directory is this one
        #: running average of one batch's time (seconds); inf: none measured yet, so the
        #: first commits go to the thread and a slow disk never blocks the loop unmeasured
        self._batch_avg = float("inf")
        #: the worker's "only one session is live" test (proxy.serve sets it); without
        #: one, every commit goes to the thread
        self.lone_session: Callable[[], bool] = lambda: False
        self.inline_batches = 0
        self._pending: dict[str, _Pending] = {}
        #: writes the pairs in its own process (archive.pair_writer): off this GIL
        self.pairs = PairProcess(reports_dir)
        self._segment_open: dict[int, int] = {}  # segment -> messages without their pair
        self._segment_files: dict[int, list[str]] = {}  # segment -> stems it holds
        self._closed: set[int] = set()  # segments no longer written
        self._late: list[tuple[MessageWriter, str, str | None]] = []
        self._retiring: set[int] = set()
        self._retire_after = 0.0  # trio time before which no retire is tried (backoff)
        self._retire_backoff = 0.0
        self._write_after = 0.0  # trio time before which no pair is written (backoff)
        self._write_backoff = 0.0
        self._preparing = False
        self._unwritten = 0
        self._room = trio.Event()
        self._work = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.batches = 0
        self.committed = 0
        self.running = False
        # cumulative timings (status, bench/pop3_relay.py): where an acknowledgement waits
        self.wait_s = 0.0  # Trio side: from queueing a commit to its release, summed
        self.batch_s = 0.0  # committer thread: journal records + barrier, per batch
        self.barrier_s = 0.0  # of that, the barrier's flush calls alone
        self.retire_s = 0.0  # retiring segments (flushing their pairs), off the ack path

    # --- the session side (Trio thread, no I/O) -------------------------------------
    async def commit(
        self, writer: MessageWriter, outcome: str = "pending", reply: str | None = None
    ) -> None:
        """Return once a completed barrier covers `writer`'s message. Raises SpoolError.

        With a final `outcome` (POP3: served whole) the report gets it straight away.
        """
        while self.running and self._unwritten > MAX_UNWRITTEN:
            self._work.set()
            await self._room.wait()
        if not self.running:
            raise SpoolError("the commit task is not running")
        await self.finish(self._start(writer, outcome, reply))

    def begin(
        self, writer: MessageWriter, outcome: str = "pending", reply: str | None = None
    ) -> Commit | None:
        """Start making `writer`'s message durable and return at once; `finish()` waits.

        Why: the session still has the message's last bytes to relay to the client
        (the POP3 body before its terminator); relayed between `begin` and `finish`,
        they go out while the disk writes, instead of before the write starts. None: the
        commit would have to wait first (memory bound, not running): use `commit()`.
        Every Commit returned must be finished (the journal is held until then).
        """
        if not self.running or self._unwritten > MAX_UNWRITTEN:
            return None
        return self._start(writer, outcome, reply, kick=True)

    def _start(
        self, writer: MessageWriter, outcome: str, reply: str | None, *, kick: bool = False
    ) -> Commit:
        req = _Request(writer, outcome, reply)
        queued = time.perf_counter()
        # a spilled message's barrier flushes its whole file: never on the loop
        inline = writer.in_memory and self._batch_avg < INLINE_BARRIER_MAX and self.lone_session()
        with self._cond:
            if inline and not self._queue and not self._busy:
                self._busy = True  # the thread stays out of the journal meanwhile
            else:
                inline = False
                self._queue.append(req)
                self._cond.notify()
        ticket = Commit(req, queued)
        if inline:
            ticket.written = self._write_batch([req], kick=kick)
        return ticket

    async def finish(self, ticket: Commit) -> None:
        """Return once the barrier covering the message of `ticket` has completed.
        Raises SpoolError. Never raises Cancelled before that is known."""
        req = ticket.request
        if ticket.written is not None:
            written, ticket.written = ticket.written, None
            self._release(*self._complete_batch(written))
            self.inline_batches += 1
            # yield, but never raise Cancelled: the message is durable now and the
            # caller must learn so (as after the shielded wait below)
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            with trio.CancelScope(shield=True):
                # Once queued, the outcome of the barrier must be waited for: a cancelled
                # session must not leave a half-known message behind.
                await req.done.wait()
        self.wait_s += time.perf_counter() - ticket.queued
        if req.error is not None:
            raise SpoolError(req.error)

    def record_outcome(self, writer: MessageWriter, outcome: str, reply: str | None) -> None:
        """The upstream's verdict for a committed message (written to its `.mpr` soon)."""
        p = self._pending.get(writer.stem)
        if p is not None:
            p.outcome = (outcome, reply)
            self._work.set()
        elif writer.committed:
            self._late.append((writer, outcome, reply))
            self._work.set()

    # --- the tasks -------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[GroupCommitter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._commit_thread, name=f"commit-{self.area.name}", daemon=True
        )
        self._thread.start()
        try:
            async with trio.open_nursery() as nursery:
                self.running = True
                self._nursery = nursery
                nursery.start_soon(self._materialise_loop)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self.running = False
            self._room.set()
            with self._cond:
                self._stopping = True
                self._cond.notify()
            with trio.CancelScope(shield=True):
                thread = self._thread
                await trio.to_thread.run_sync(thread.join)
                # the thread answered every request it took; release what it handed back
                await trio.lowlevel.checkpoint()
                for req in self._queue:
                    req.error = "the service is stopping"
                    req.done.set()
                self._queue = []
                await trio.to_thread.run_sync(self._flush_all)
                await self.pairs.aclose()

    def _commit_thread(self) -> None:
        """The committer's own thread: batches, barriers, and the hand-back to Trio."""
        assert self._token is not None
        while True:
            with self._cond:
                while (not self._queue or self._busy) and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._busy = True
            done = self._run_batch(batch)
            try:
                self._token.run_sync_soon(self._release, *done)
            except trio.RunFinishedError:
                return

    def _run_batch(self, batch: list[_Request]) -> tuple[list[_Request], list[int]]:
        """One batch through the barrier (whoever set `_busy`); (batch, closed segments)."""
        return self._complete_batch(self._write_batch(batch))

    def _write_batch(self, batch: list[_Request], *, kick: bool = False) -> _Written:
        """The first half of a batch: its journal records (and spilled files), written
        but not flushed. `kick`: start their writeback now (the barrier comes later)."""
        started = time.perf_counter()
        written = _Written(batch)
        try:
            self._write_records(written)
            if kick and written.good and written.error is None:
                start_writeback(self.journal.fd)  # type: ignore[arg-type]
        except Exception as e:  # a bug must not leave sessions waiting
            written.bug = e
        written.took = time.perf_counter() - started
        return written

    def _complete_batch(self, written: _Written) -> tuple[list[_Request], list[int]]:
        """The second half: the barrier, then the batch's verdict; releases `_busy`."""
        started = time.perf_counter()
        batch = written.batch
        try:
            if written.bug is not None:
                raise written.bug
            self._sync_records(written)
        except Exception as e:  # a bug must not leave sessions waiting
            log.error("group commit failed: %r", e, exc_info=True)
            for req in batch:
                req.error = req.error or "internal error in the commit path"
                req.writer.discard_final_eml()
        finally:
            # (a begun batch: without the time between its halves, the session's send)
            took = written.took + time.perf_counter() - started
            self.batch_s += took
            avg = self._batch_avg
            self._batch_avg = took if avg == float("inf") else 0.8 * avg + 0.2 * took
            closed = self.journal.take_closed()
            with self._cond:
                self._busy = False
                if self._queue:  # commits queued behind an inline batch: the thread's turn
                    self._cond.notify()
        return batch, closed

    def _release(self, batch: list[_Request], closed: list[int]) -> None:
        """Trio thread, after the barrier: queue the batch's pairs, wake its sessions."""
        now = time.monotonic()
        for req in batch:
            if req.error is None:
                seg = req.writer.segment
                p = _Pending(req.writer, seg, now, req.inline, req.record)
                if req.outcome != "pending":
                    p.outcome = (req.outcome, req.reply)
                self._pending[req.writer.stem] = p
                self._unwritten += req.inline
                self._segment_open[seg] = self._segment_open.get(seg, 0) + 1
                self._segment_files.setdefault(seg, []).append(req.writer.stem)
            req.done.set()
        self._closed.update(closed)
        self._work.set()

    def _write_records(self, written: _Written) -> None:
        """Journal records (and spilled files) of a batch; a write error is kept in
        `written.error` for `_sync_records` (which then fails the batch)."""
        room = self._room_problem(written.batch)
        try:
            for req in written.batch:
                if req.writer.in_memory and room is not None:
                    req.error = room
                    continue
                inline = req.writer.inline_bytes()
                if inline is None:
                    try:
                        fd = req.writer.write_final_eml()
                    except SpoolError as e:
                        req.error = str(e)
                        continue
                    written.spilled.append(fd)
                else:
                    req.inline = len(inline)
                written.good.append(req)
                try:
                    req.writer.segment, req.record = self.journal.append(
                        req.writer.stem, req.writer.document("pending", None), inline
                    )
                finally:
                    if inline is not None:
                        inline.release()  # a view of the writer's buffer, cleared later
        except OSError as e:
            written.error = e

    def _sync_records(self, written: _Written) -> None:
        """The barrier over what `_write_records` wrote, then each message's verdict."""
        good = written.good
        error: str | None = None
        try:
            if written.error is not None:
                raise written.error
            if good:
                self._flush(written.spilled)
        except OSError as e:
            self.journal.broken()
            error = f"cannot make the copy durable in {self.reports_dir}: {e.strerror or e}"
        finally:
            for fd in written.spilled:
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

    def _room_problem(self, batch: list[_Request]) -> str | None:
        """Can the report directory take the batch's pairs? (None: yes.)

        A message kept in memory is durable in the journal before its `.eml` exists, so
        an unusable or full report directory would otherwise show only later, in the
        report writer. Fail closed up front instead: the directory must be a writable
        directory with room for every pair of the batch (bytes and inodes), as the
        `.eml` written on the hot path used to prove. Space that vanishes after this
        check loses nothing either: the pair stays in the journal until it is written.
        """
        # a spilled message's `.eml` is already written: only the rest needs room
        need = sum(r.writer.size for r in batch if r.writer.in_memory)
        need += PAIR_OVERHEAD * len(batch)
        now = time.monotonic()
        try:
            # one stat per batch: the directory must still be the one measured below
            # (removed, replaced or chmod'ed: measured again, so refused at once)
            seen = os.stat(self.reports_dir)
        except OSError as e:
            return f"cannot write message file in {self.reports_dir}: {e.strerror or e}"
        same = (seen.st_dev, seen.st_ino, seen.st_mode, seen.st_uid, seen.st_gid)
        if now < self._room_until and need <= self._room_spare and same == self._room_dir:
            # Room measured lately with a wide margin (ROOM_MARGIN): two file-system
            # calls per batch saved. What the margin cannot cover is measured again.
            self._room_spare -= need
            return None
        self._room_until = 0.0
        try:
            st = os.statvfs(self.reports_dir)
            usable = os.path.isdir(self.reports_dir) and os.access(
                self.reports_dir, os.W_OK | os.X_OK
            )
        except OSError as e:
            return f"cannot write message file in {self.reports_dir}: {e.strerror or e}"
        if not usable:
            return f"cannot write message file in {self.reports_dir}: not a writable directory"
        free = st.f_bavail * st.f_frsize
        if free < need or (st.f_files and st.f_favail < 2 * len(batch)):
            return f"cannot write message file in {self.reports_dir}: No space left on device"
        if free - need >= 2 * ROOM_MARGIN and (not st.f_files or st.f_favail >= ROOM_INODES):
            self._room_until = now + ROOM_RECHECK
            self._room_spare = ROOM_MARGIN  # a budget well inside the free space seen
            self._room_dir = same
        return None

    def _flush(self, spilled: list[int]) -> None:
        """The barrier: one fdatasync of the journal, which holds the bytes of every
        message kept in memory. A message too large for that streamed into its own
        file: those files and the report directory are flushed first."""
        started = time.perf_counter()
        for fd in spilled:
            os.fdatasync(fd)
        if spilled:
            fsync_dir(self.reports_dir)
        self.journal.sync()
        self.barrier_s += time.perf_counter() - started

    async def _materialise_loop(self) -> None:
        """Write due pairs in a thread; all bookkeeping stays on the Trio thread."""
        while True:
            with trio.move_on_after(OUTCOME_WAIT / 4):
                await self._work.wait()
            self._work = trio.Event()
            await trio.sleep(MATERIALISE_INTERVAL)  # let a few commits gather
            now = time.monotonic()
            late: list[tuple[MessageWriter, str, str | None]] = []
            due = [
                (p, p.outcome or ("pending", None))
                for p in self._pending.values()
                if p.inline
                or (
                    (p.outcome is not None or now - p.committed_at >= OUTCOME_WAIT)
                    and p.written != (p.outcome or ("pending",))[0]
                )
            ]
            if trio.current_time() < self._write_after:
                due = []  # the last pass failed: wait out the backoff (the pairs stay due)
            else:
                late, self._late = self._late, []
            if due or late:
                with trio.CancelScope(shield=True):
                    written, failed = await self._write_reports(due, late, now)
                self._pairs_failed(failed)
                for (p, _), (eml_ok, mpr_outcome) in zip(due, written, strict=True):
                    if eml_ok and p.inline:
                        self._unwritten -= p.inline
                        p.inline = 0
                    if mpr_outcome is None:
                        continue
                    if p.written is None:  # its first report: one less in its segment
                        self._segment_open[p.segment] = self._segment_open.get(p.segment, 1) - 1
                    p.written = mpr_outcome
                    # an outcome that came while the report was written is written next
                    final = p.outcome is not None and p.written == p.outcome[0]
                    if final or (p.outcome is None and mpr_outcome == "pending"):
                        self._pending.pop(p.writer.stem, None)
                if self._unwritten <= MAX_UNWRITTEN:
                    self._room.set()
                    self._room = trio.Event()
            todo = [
                seg
                for seg in self._closed
                if self._segment_open.get(seg, 0) <= 0 and seg not in self._retiring
            ]
            if todo and self._nursery is not None and trio.current_time() >= self._retire_after:
                # flushing can take long on a busy disk: never delay the next reports
                self._retiring.update(todo)
                self._nursery.start_soon(self._retire_async, todo)
            j = self.journal
            if not self._preparing and self._nursery is not None and j.fd is not None:
                # only a journal that fills segments needs one ready (not a test's few records)
                if j.offset > SEGMENT_BYTES // 2 and j.free_count() == 0 and not self._retiring:
                    self._preparing = True
                    self._nursery.start_soon(self._prepare_async)

    async def _prepare_async(self) -> None:
        """Keep one pre-zeroed segment ready while no retired one is (first use)."""
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.journal.prepare)
        except OSError as e:
            log.warning("cannot prepare a journal segment: %s", e.strerror)
        finally:
            self._preparing = False

    async def _retire_async(self, segments: list[int]) -> None:
        files = {seg: self._segment_files.get(seg, []) for seg in segments}
        try:
            with trio.CancelScope(shield=True):
                done = await trio.to_thread.run_sync(self._retire, files)
            if done:
                self._retire_backoff = 0.0
            else:  # the flush failed: the segments stay, the next try backs off
                self._retire_backoff = min(
                    RETIRE_RETRY_MAX, max(RETIRE_RETRY_FIRST, 2 * self._retire_backoff)
                )
                self._retire_after = trio.current_time() + self._retire_backoff
            for seg in done:
                if self._segment_open.get(seg, 0) <= 0:
                    self._segment_open.pop(seg, None)
                    self._segment_files.pop(seg, None)
                    self._closed.discard(seg)
        finally:
            self._retiring.difference_update(segments)

    def _pairs_failed(self, failed: list[str]) -> None:
        """Trio thread: one log line per failed pass of the report writer, and a backoff
        (1 s doubling to 60 s) before the next, so a report directory that stays broken
        is neither hammered nor floods the log; the pairs wait in memory and journal."""
        if not failed:
            self._write_backoff = 0.0
            return
        self._write_backoff = min(PAIR_RETRY_MAX, max(PAIR_RETRY_FIRST, 2 * self._write_backoff))
        self._write_after = trio.current_time() + self._write_backoff
        log.error(
            "cannot write %d report file(s) in %s (%s); kept in the journal, "
            "next try in %gs",
            len(failed), self.reports_dir, failed[0], self._write_backoff,
        )  # fmt: skip

    async def _write_reports(
        self,
        due: list[tuple[_Pending, tuple[str, str | None]]],
        late: list[tuple[MessageWriter, str, str | None]],
        now: float,
    ) -> tuple[list[tuple[bool, str | None]], list[str]]:
        """Each due `.eml`, then its `.mpr` when due, by the pair writer process (read
        from their journal records); the late outcomes' `.mpr` rewrites in a thread.

        Returns what was written per due pair, and the errors of what was not (each
        such pair stays due and is written by a later pass).
        """
        jobs = []
        for p, (outcome, reply) in due:
            mpr_due = (
                p.outcome is not None or now - p.committed_at >= OUTCOME_WAIT
            ) and p.written != outcome
            path, hoff, hlen, dlen = p.record
            jobs.append(
                [path, hoff, hlen, dlen, p.writer.stem, bool(p.inline)]
                + ([outcome, reply] if mpr_due else [None, None])
            )
        written: list[tuple[bool, str | None]] = []
        failed: list[str] = []
        for (p, _), (eml_ok, mpr_outcome, error) in zip(
            due, await self.pairs.write(jobs), strict=True
        ):
            if eml_ok and p.inline:
                p.writer.forget_bytes()  # its `.eml` holds them now
            if error is not None:
                failed.append(error)
            written.append((bool(eml_ok), mpr_outcome))
        if late:
            failed += await trio.to_thread.run_sync(self._write_late, late)
        return written, failed

    @staticmethod
    def _write_late(late: list[tuple[MessageWriter, str, str | None]]) -> list[str]:
        """Worker thread: the outcomes that came after their `.mpr` was written."""
        failed = []
        for writer, outcome, reply in late:
            if writer.mpr_path.exists():  # ingest may already have removed the pair
                if not writer.write_mpr(outcome, reply):
                    failed.append(f"{writer.stem}.mpr: {writer.error}")
        return failed

    def _retire(self, files: dict[int, list[str]]) -> list[int]:
        """Worker thread: make the segments' pairs durable, then free the segments."""
        started = time.perf_counter()
        try:
            if not flush_filesystem(self.reports_dir):
                paths = [
                    self.reports_dir / f"{stem}{ext}"
                    for stems in files.values()
                    for stem in stems
                    for ext in (".eml", ".mpr")
                ]
                flush_files(paths, self.reports_dir)
        except OSError as e:
            log.error("cannot flush written reports (journal kept): %s", e.strerror)
            return []
        finally:
            self.retire_s += time.perf_counter() - started
        done = []
        for seg in files:
            try:
                self.journal.release(seg)
            except OSError as e:
                log.error("cannot free journal segment %d: %s", seg, e.strerror)
                continue
            done.append(seg)
        return done

    def _flush_all(self) -> None:
        """At shutdown: write every pair still waiting, flush them, free the journal."""
        for p in self._pending.values():
            if p.inline:
                try:
                    p.writer.write_committed_eml()
                except OSError as e:
                    log.error("cannot write %s.eml (kept in the journal): %s", p.writer.stem, e)
                    continue
            outcome, reply = p.outcome or ("pending", None)
            if p.written != outcome:
                p.writer.write_mpr(outcome, reply)
        self._pending.clear()
        self.journal.close()
        self._closed.update(self.journal.take_closed())
        try:
            recover(self.reports_dir, self.area, quiet=True)
        except OSError as e:
            log.error("journal kept for recovery: %s", e.strerror)

    def snapshot(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "inline_batches": self.inline_batches,
            "committed": self.committed,
            "awaiting_outcome": len(self._pending),
            "wait_ms": round(self.wait_s * 1e3, 3),
            "batch_ms": round(self.batch_s * 1e3, 3),
            "barrier_ms": round(self.barrier_s * 1e3, 3),
            "retire_ms": round(self.retire_s * 1e3, 3),
            # a count over 1: the pair writer process died and was started again
            "pair_writer_starts": self.pairs.starts,
        }


# --- recovery ------------------------------------------------------------------------


def _pair_intact(reports_dir: Path, stem: str, doc: dict[str, Any]) -> bool:
    """Both files there, the `.eml` of the recorded size, the `.mpr` whole JSON."""
    try:
        if (reports_dir / f"{stem}.eml").stat().st_size != doc.get("size"):
            return False
        json.loads((reports_dir / f"{stem}.mpr").read_bytes())
        return True
    except (OSError, ValueError):
        return False


def recover(reports_dir: Path, area: Path, *, quiet: bool = False) -> dict[str, int]:
    """Rebuild the pairs of journalled messages after a crash (blocking; before serving).

    Every complete record of a live segment (this release's recycled segments, or an
    append-only `journal-*.log` of the previous one) whose pair is missing or damaged
    gets its `.eml` from the journal and its `.mpr` with outcome "pending" (the verdict
    is in doubt). A large message's record points at its own `.eml`, flushed before the
    barrier: an `.eml` that does not match the record was never acknowledged and is
    dropped. The segment's pairs are then flushed and the segment is freed.
    """
    counts = {"restored": 0, "dropped": 0, "present": 0}
    live: list[tuple[Path, list[tuple[str, dict[str, Any], bytes | None]], bool]] = []
    for n in segment_numbers(area):
        path = segment_path(area, n)
        try:
            state, _gen, records = parse_segment(path.read_bytes())
        except OSError:
            continue
        if state == STATE_ACTIVE:
            live.append((path, records, True))
    for n in segment_numbers(area, LEGACY_SUFFIX):
        path = segment_path(area, n, LEGACY_SUFFIX)
        try:
            live.append((path, parse_journal(path.read_bytes()), False))
        except OSError:
            continue
    if not live:
        return counts
    reports_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(area)
    for path, records, recycled in live:
        stems: list[str] = []
        for stem, doc, raw in records:
            if "/" in stem or stem.startswith(".") or not stem:
                continue
            stems.append(stem)
            if _pair_intact(reports_dir, stem, doc):
                counts["present"] += 1
                continue
            eml = reports_dir / f"{stem}.eml"
            from_file = raw is None
            if raw is None:  # a large message: its own file was flushed before the record
                try:
                    raw = eml.read_bytes()
                except OSError:
                    counts["dropped"] += 1
                    continue
            if not holds_message(doc, raw):
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
        flush_files(
            [reports_dir / f"{s}{ext}" for s in stems for ext in (".eml", ".mpr")], reports_dir
        )
        if recycled:
            journal.release(int(path.name[8:16]))
        else:
            path.unlink(missing_ok=True)
    fsync_dir(area)
    if not quiet:
        log.debug("recovered %s: %s", area, counts)
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
