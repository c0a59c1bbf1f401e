"""Group commit (archive.commit): no acknowledgement before the barrier that covers it.

The property test drives the real committer (real files, real threads, Trio) with random
numbers of concurrent sessions, message sizes (in memory or spilled to a temp file),
arrival delays, slow barriers and failing barriers. It watches the real flush calls
(`os.fdatasync` of each `.eml` and of the journal, the directory fsync) and checks, for
every message whose `commit()` returned, that before it returned the journal was
fdatasync'd while it already held the message's complete record (with the message bytes,
read back with the real parser), and, for a message too large to be kept in memory
(its bytes live in its own file):
- its `.eml` was fdatasync'd holding all of its bytes,
- the report directory was fsync'd after that `.eml` existed;
and that a message in a failed barrier is never acknowledged and leaves no `.eml`.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archive.commit as commit_mod
import archive.journal as journal_mod
from archive.commit import GroupCommitter, live_segments, parse_journal, recover
from archive.journal import parse_segment, segment_numbers, segment_path
from archive.spool import SPILL_BYTES, Spool, SpoolError


class Recorder:
    """Wraps the flush calls; keeps an ordered event log."""

    def __init__(self, reports: Path, area: Path, fail_syncs: set[int], slow: float) -> None:
        self.reports, self.area = reports, area
        self.events: list[tuple] = []
        self.lock = threading.Lock()
        self.fail_syncs = fail_syncs
        self.slow = slow
        self.journal_syncs = 0
        self.real_fdatasync = os.fdatasync
        self.real_fsync_dir = commit_mod.fsync_dir

    def fdatasync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(str(self.area)) and parse_segment(Path(path).read_bytes())[0] == 0:
            self.real_fdatasync(fd)  # a segment being freed (retired), not a barrier
            return
        if path.startswith(str(self.area)):
            with self.lock:
                n = self.journal_syncs
                self.journal_syncs += 1
            if self.slow:
                time.sleep(self.slow)
            if n in self.fail_syncs:
                raise OSError(errno.EIO, "Input/output error")
            content = Path(path).read_bytes()
            self.real_fdatasync(fd)
            # only records complete with their message bytes count (the real parser)
            stems = {stem for stem, _doc, _raw in parse_journal(content)}
            with self.lock:
                self.events.append(("journal", stems))
            return
        self.real_fdatasync(fd)
        with self.lock:
            self.events.append(("eml", Path(path).name, os.fstat(fd).st_size))

    def fsync_dir(self, path: Path) -> None:
        self.real_fsync_dir(path)
        if Path(path) == self.reports:
            existing = {p.name for p in self.reports.iterdir()}
            with self.lock:
                self.events.append(("dir", existing))

    def ack(self, stem: str) -> None:
        with self.lock:
            self.events.append(("ack", stem))


def check_acks(rec: Recorder, sizes: dict[str, int]) -> None:
    for i, ev in enumerate(rec.events):
        if ev[0] != "ack":
            continue
        stem = ev[1]
        before = rec.events[:i]
        eml = f"{stem}.eml"
        assert any(e[0] == "journal" and stem in e[1] for e in before), "no journal flush"
        if sizes[stem] < SPILL_BYTES:
            continue  # its bytes are in the journal record
        synced = [j for j, e in enumerate(before) if e[0] == "eml" and e[1] == eml]
        assert synced, f"{stem} acknowledged before its .eml was flushed"
        assert any(before[j][2] == sizes[stem] for j in synced), "flushed before complete"
        assert any(e[0] == "dir" and eml in e[1] for e in before), "no directory flush"


def no_reports(self, due, late, now):
    """The report writer of a committer that crashes before writing any pair."""
    return [(False, None)] * len(due), []


def committer_dirs(tmp_path: Path) -> tuple[Path, Path, Spool]:
    """The report directory (created), the spool area and a Spool on them."""
    reports, area = tmp_path / "reports", tmp_path / "spool" / "w0"
    reports.mkdir()
    return reports, area, Spool(reports)


async def crash_after_barrier(tmp_path, monkeypatch, messages, outcome="delivered"):
    """Commit `messages` ((protocol, report, bytes)) and stop as a crash right after the
    barrier would: no pair written, the journal left as it is. -> reports, area, writers"""
    reports, area, spool = committer_dirs(tmp_path)
    monkeypatch.setattr(GroupCommitter, "_write_reports", no_reports)
    monkeypatch.setattr(GroupCommitter, "_flush_all", lambda self: self.journal.close())
    writers = []
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        for protocol, report, raw in messages:
            w = spool.open_message(protocol, report)
            w.write(raw)
            await committer.commit(w, outcome, None)
            writers.append(w)
        nursery.cancel_scope.cancel()
    return reports, area, writers


sessions_st = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=0.01),  # arrival delay
        st.sampled_from([100, 5000, SPILL_BYTES + 10]),  # size: in memory or spilled
    ),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    sessions=sessions_st,
    fail_syncs=st.sets(st.integers(min_value=0, max_value=4), max_size=2),
    slow=st.sampled_from([0.0, 0.002, 0.01]),
    lone=st.sampled_from(["never", "always", "alternate"]),
    via=st.sampled_from(["commit", "begin", "mixed"]),
)
def test_no_ack_before_its_barrier(monkeypatch, sessions, fail_syncs, slow, lone, via):
    """Thread and inline (lone session) barriers alike, and commits begun while the
    session goes on sending (begin/finish) as well as awaited at once: no ack before
    its flush."""
    with tempfile.TemporaryDirectory() as tmp:
        reports, area = Path(tmp) / "reports", Path(tmp) / "spool" / "w0"
        reports.mkdir()
        rec = Recorder(reports, area, fail_syncs, slow)
        monkeypatch.setattr(commit_mod.os, "fdatasync", rec.fdatasync)
        monkeypatch.setattr(commit_mod, "fsync_dir", rec.fsync_dir)
        # the recorder makes every barrier slow; inline commits must still be drawn
        monkeypatch.setattr(commit_mod, "INLINE_BARRIER_MAX", 1.0)
        spool = Spool(reports)
        sizes: dict[str, int] = {}
        acked: list[str] = []
        failed: list[str] = []

        async def session(committer: GroupCommitter, delay: float, size: int, n: int) -> None:
            await trio.sleep(delay)
            w = spool.open_message("smtp", {"smtp": {"mail_from": f"s{n}@x"}})
            data = (b"x" * 78 + b"\r\n") * (size // 80 + 1)
            for i in range(0, len(data), 65536):
                w.write(data[i : i + 65536])
            sizes[w.stem] = w.size
            try:
                begun = via == "begin" or (via == "mixed" and n % 2)
                if begun and (ticket := committer.begin(w)) is not None:
                    await trio.sleep(delay / 2)  # the session sends to its client meanwhile
                    await committer.finish(ticket)
                else:
                    await committer.commit(w)
            except SpoolError:
                failed.append(w.stem)
                return
            rec.ack(w.stem)
            acked.append(w.stem)
            committer.record_outcome(w, "delivered", "250 ok")

        async def main() -> None:
            async with trio.open_nursery() as outer:
                committer = await outer.start(GroupCommitter(reports, area).run)
                calls = itertools.count()
                committer.lone_session = {
                    "never": lambda: False,
                    "always": lambda: True,
                    "alternate": lambda: next(calls) % 2 == 0,
                }[lone]
                async with trio.open_nursery() as nursery:
                    for n, (delay, size) in enumerate(sessions):
                        nursery.start_soon(session, committer, delay, size, n)
                outer.cancel_scope.cancel()

        trio.run(main)
        assert len(acked) + len(failed) == len(sessions)
        check_acks(rec, sizes)
        for stem in failed:
            assert not (reports / f"{stem}.eml").exists()
            assert not (reports / f"{stem}.mpr").exists()
        for stem in acked:  # after the committer stopped: every report written, final
            doc = json.loads((reports / f"{stem}.mpr").read_text())
            assert doc["upstream"]["outcome"] == "delivered"
            assert doc["size"] == sizes[stem] == (reports / f"{stem}.eml").stat().st_size
        assert not [p for p in reports.iterdir() if p.name.startswith(".")]
        assert live_segments(area) == []  # journal retired at shutdown


async def test_a_begun_lone_commit_writes_and_starts_writeback_but_flushes_at_finish(
    tmp_path, monkeypatch
):
    """begin() on the loop: the record is written and its writeback started, nothing is
    flushed; finish() runs the barrier and only then returns (the acknowledgement)."""
    reports, area, spool = committer_dirs(tmp_path)
    syncs: list[int] = []
    kicks: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(commit_mod.os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    monkeypatch.setattr(commit_mod, "start_writeback", kicks.append)
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        committer.lone_session = lambda: True
        committer._batch_avg = 0.0  # measured fast: inline
        w = spool.open_message("pop3", {"pop3": {"user": "u"}})
        w.write(b"Subject: x\r\n\r\nbody\r\n")
        ticket = committer.begin(w, "delivered", None)
        assert ticket is not None and ticket.written is not None  # inline, written
        assert kicks == [committer.journal.fd] and syncs == []
        with open(committer.journal.path, "rb") as f:  # noqa: ASYNC230 - a test's read
            assert [stem for stem, _d, _r in parse_journal(f.read())] == [w.stem]
        assert not w.committed
        other = spool.open_message("pop3", {"pop3": {"user": "v"}})
        other.write(b"Subject: y\r\n\r\n")
        queued = committer.begin(other, "delivered", None)  # the journal is held: queued
        assert queued is not None and queued.written is None
        await committer.finish(ticket)
        assert w.committed and syncs  # flushed before finish returned
        await committer.finish(queued)
        assert other.committed
        nursery.cancel_scope.cancel()
    assert committer.inline_batches == 1


async def test_outcome_written_once_and_pending_when_none_comes(tmp_path, monkeypatch):
    monkeypatch.setattr(commit_mod, "OUTCOME_WAIT", 0.2)
    reports, area, spool = committer_dirs(tmp_path)
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        a = spool.open_message("smtp", {})
        a.write(b"Subject: a\r\n\r\nA\r\n")
        b = spool.open_message("smtp", {})
        b.write(b"Subject: b\r\n\r\nB\r\n")
        await committer.commit(a)
        await committer.commit(b)
        assert not a.mpr_path.exists()  # the pair is written off the ack path
        committer.record_outcome(a, "rejected", "554 no")
        with trio.fail_after(5):
            while not (a.mpr_path.exists() and b.mpr_path.exists()):  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert json.loads(a.mpr_path.read_text())["upstream"]["outcome"] == "rejected"
        assert json.loads(b.mpr_path.read_text())["upstream"]["outcome"] == "pending"
        committer.record_outcome(b, "delivered", "250 late")  # rewritten when late
        with trio.fail_after(5):
            while "delivered" not in b.mpr_path.read_text():  # noqa: ASYNC110
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def test_recover_restores_intact_and_drops_damaged(tmp_path, monkeypatch):
    """A crash after the barrier, before the reports were written (materialiser stopped)."""
    messages = [
        ("pop3", {"pop3": {"user": "u", "msg": i}}, b"Subject: %d\r\n\r\nbody\r\n" % i)
        for i in range(3)
    ]
    reports, area, writers = await crash_after_barrier(tmp_path, monkeypatch, messages)
    assert not list(reports.glob("*.mpr")) and live_segments(area)
    writers[0].eml_path.write_bytes(b"damaged")  # rebuilt from the journal's copy
    writers[1].eml_path.unlink(missing_ok=True)  # likewise
    # a torn tail: the last record's message bytes never reached the disk
    seg = segment_path(area, live_segments(area)[-1])
    seg.write_bytes(seg.read_bytes()[:-5])
    writers[2].eml_path.unlink(missing_ok=True)
    counts = recover(reports, area)
    assert counts == {"restored": 2, "dropped": 0, "present": 0}
    for i, w in enumerate(writers[:2]):
        doc = json.loads(w.mpr_path.read_text())
        assert doc["upstream"]["outcome"] == "pending"  # the verdict is in doubt
        assert doc["pop3"]["msg"] == i
        assert w.eml_path.read_bytes() == b"Subject: %d\r\n\r\nbody\r\n" % i
    assert not writers[2].eml_path.exists() and not writers[2].mpr_path.exists()
    assert live_segments(area) == []
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]


async def test_recover_checks_a_large_message_file(tmp_path, monkeypatch):
    """A spilled message's bytes are in its own file, not the journal: a damaged file
    (never acknowledged) is dropped."""
    messages = [
        ("smtp", {}, b"Subject: big %d\r\n\r\n" % i + b"y" * (SPILL_BYTES + 100)) for i in range(2)
    ]
    reports, area, writers = await crash_after_barrier(tmp_path, monkeypatch, messages, "pending")
    writers[1].eml_path.write_bytes(b"short")
    assert recover(reports, area) == {"restored": 1, "dropped": 1, "present": 0}
    assert json.loads(writers[0].mpr_path.read_text())["size"] == writers[0].size
    assert not writers[1].eml_path.exists()


async def test_commit_refused_when_the_committer_is_not_running(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    w = Spool(reports).open_message("smtp", {})
    with pytest.raises(SpoolError):
        await GroupCommitter(reports, tmp_path / "a").commit(w)


async def test_journal_segments_are_retired_once_their_reports_are_written(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "SEGMENT_RECORDS", 3)
    reports, area, spool = committer_dirs(tmp_path)
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        writers = []
        for i in range(10):
            w = spool.open_message("smtp", {})
            w.write(b"Subject: %d\r\n\r\nx\r\n" % i)
            await committer.commit(w)
            committer.record_outcome(w, "delivered", "250 ok")
            writers.append(w)
        with trio.fail_after(10):
            # 10 records in segments of 3: only the open (last) segment remains
            while len(live_segments(area)) > 1 or not all(  # noqa: ASYNC110
                w.mpr_path.exists() for w in writers
            ):
                await trio.sleep(0.02)
        assert live_segments(area) == [committer.journal.seq]
        files = segment_numbers(area)
        for i in range(6):  # two more segments' worth: retired files are recycled
            w = spool.open_message("smtp", {})
            w.write(b"Subject: again %d\r\n\r\nx\r\n" % i)
            await committer.commit(w)
            committer.record_outcome(w, "delivered", "250 ok")
            writers.append(w)
        assert segment_numbers(area) == files
        for w in writers[:10]:
            assert json.loads(w.mpr_path.read_text())["upstream"]["outcome"] == "delivered"
        nursery.cancel_scope.cancel()
    assert live_segments(area) == []


def _doc(stem: str, raw: bytes) -> dict:
    return {"id": stem, "protocol": "pop3", "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "upstream": {"outcome": "pending", "reply": None}}  # fmt: skip


def test_a_recycled_segment_replays_only_its_own_generation(tmp_path):
    """A segment used, freed and used again still holds records of its first use after
    the new ones: recovery must stop at the first of them (they were retired long ago,
    and their pairs may have been ingested and removed)."""
    reports, area, _ = committer_dirs(tmp_path)
    j = journal_mod.Journal(area)
    old = [(f"old{i}", b"Subject: old %d\r\n\r\n" % i + b"o" * 3000) for i in range(5)]
    for stem, raw in old:
        seg, _ = j.append(stem, _doc(stem, raw), raw)
    j.sync()
    j.close()
    j.release(seg)  # retired: its pairs were durable (and then ingested and removed)
    j = journal_mod.Journal(area)
    new = [("new0", b"Subject: new\r\n\r\n" + b"n" * 100)]
    assert j.append("new0", _doc(*new[0]), new[0][1])[0] == seg  # recycled, same file
    j.sync()
    j.close()
    state, gen, records = parse_segment(segment_path(area, seg).read_bytes())
    assert [r[0] for r in records] == ["new0"] and gen == 2
    # the old records are still in the file, byte for byte, behind the new one
    assert b"Subject: old 4" in segment_path(area, seg).read_bytes()
    assert recover(reports, area) == {"restored": 1, "dropped": 0, "present": 0}
    assert (reports / "new0.eml").read_bytes() == new[0][1]
    assert not list(reports.glob("old*"))
    assert live_segments(area) == [] and segment_numbers(area) == [seg]  # kept, free


def test_a_torn_record_over_old_ones_ends_the_segment(tmp_path):
    """The last record of the new generation is torn (only its first bytes overwrote
    an old record): it and everything behind it are ignored."""
    reports, area, _ = committer_dirs(tmp_path)
    j = journal_mod.Journal(area)
    for i in range(4):
        raw = b"Subject: old\r\n\r\n" + b"o" * 5000
        seg, _ = j.append(f"old{i}", _doc(f"old{i}", raw), raw)
    j.sync()
    j.release(seg)
    j.close()
    j = journal_mod.Journal(area)
    a = b"Subject: a\r\n\r\n" + b"a" * 2000
    j.append("a", _doc("a", a), a)
    end_of_a = j.offset
    b = b"Subject: b\r\n\r\n" + b"b" * 2000
    j.append("b", _doc("b", b), b)
    j.sync()
    j.close()
    path = segment_path(area, seg)
    buf = bytearray(path.read_bytes())
    # a torn write of b: its frame and header made it, the tail of its data did not
    # (the old generation's bytes are still there)
    old_bytes = bytes(parse_segment_old := buf[end_of_a + 400 : end_of_a + 800])
    buf[j.offset - 200 : j.offset] = b"o" * 200
    path.write_bytes(bytes(buf))
    assert old_bytes == bytes(parse_segment_old)
    assert [r[0] for r in parse_segment(bytes(buf))[2]] == ["a"]
    assert recover(reports, area) == {"restored": 1, "dropped": 0, "present": 0}
    assert (reports / "a.eml").read_bytes() == a and not (reports / "b.eml").exists()


def test_recover_replays_a_journal_of_the_previous_release(tmp_path):
    """An append-only `journal-*.log` left by the previous release after a crash."""
    reports, area, _ = committer_dirs(tmp_path)
    area.mkdir(parents=True)
    raw = b"Subject: legacy\r\n\r\nx\r\n"
    (area / "journal-00000007.log").write_bytes(commit_mod.encode_record("l", _doc("l", raw), raw))
    assert recover(reports, area)["restored"] == 1
    assert (reports / "l.eml").read_bytes() == raw
    assert not (area / "journal-00000007.log").exists()


async def test_a_pair_present_but_damaged_is_rewritten_from_the_journal(tmp_path, monkeypatch):
    """After a power loss a pair written shortly before may be empty (never flushed):
    recovery does not trust its mere existence."""
    reports, area, spool = committer_dirs(tmp_path)
    monkeypatch.setattr(GroupCommitter, "_flush_all", lambda self: self.journal.close())
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        w = spool.open_message("pop3", {"pop3": {"user": "u", "msg": 1}})
        w.write(b"Subject: p\r\n\r\nbody\r\n")
        await committer.commit(w, "delivered", None)
        with trio.fail_after(10):
            while not w.mpr_path.exists():  # noqa: ASYNC110
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    w.eml_path.write_bytes(b"")
    w.mpr_path.write_bytes(b"")
    assert recover(reports, area) == {"restored": 1, "dropped": 0, "present": 0}
    assert w.eml_path.read_bytes() == b"Subject: p\r\n\r\nbody\r\n"
    assert json.loads(w.mpr_path.read_text())["pop3"]["msg"] == 1


async def test_the_commit_timings_account_for_every_wait(tmp_path, monkeypatch):
    """`status` shows where an acknowledgement waits: each session's wait covers its
    batch's work, which covers the barrier; retiring is timed apart (off the ack path)."""
    monkeypatch.setattr(journal_mod, "SEGMENT_RECORDS", 2)
    reports, area, spool = committer_dirs(tmp_path)
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        for i in range(5):
            w = spool.open_message("pop3", {})
            w.write(b"Subject: %d\r\n\r\nx\r\n" % i)
            await committer.commit(w, "delivered", None)
        with trio.fail_after(10):
            while committer.retire_s == 0:  # noqa: ASYNC110 - a segment of 2 retires
                await trio.sleep(0.02)
        snap = committer.snapshot()
        nursery.cancel_scope.cancel()
    assert snap["batches"] == 5 and snap["committed"] == 5
    assert committer.wait_s >= committer.batch_s >= committer.barrier_s > 0
    assert {"wait_ms", "batch_ms", "barrier_ms", "retire_ms"} <= snap.keys()


def test_flush_filesystem_is_one_syncfs_where_it_reports_errors(tmp_path):
    # True on Linux >= 5.8 (syncfs reports writeback errors there); otherwise the
    # committer flushes file by file
    assert journal_mod.flush_filesystem(tmp_path) is journal_mod._syncfs_reports_errors()


async def test_a_failed_retire_flush_keeps_the_segment(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "SEGMENT_RECORDS", 2)
    calls = []

    def failing(directory):
        calls.append(directory)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(commit_mod, "flush_filesystem", failing)
    reports, area, spool = committer_dirs(tmp_path)
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        writers = []
        for i in range(3):  # the first segment (2 records) is closed
            w = spool.open_message("pop3", {})
            w.write(b"Subject: %d\r\n\r\nx\r\n" % i)
            await committer.commit(w, "delivered", None)
            writers.append(w)
        with trio.fail_after(10):
            while not calls:  # noqa: ASYNC110 - wait for the retire attempt
                await trio.sleep(0.02)
        # the pairs are written, but not known durable: the journal keeps them
        assert all(w.mpr_path.exists() for w in writers)
        assert len(live_segments(area)) == 2
        # a broken disk is retried with a backoff, not on every report-writer pass
        for _ in range(5):
            committer._work.set()
            await trio.sleep(0.05)
        assert len(calls) == 1
        monkeypatch.setattr(commit_mod, "flush_filesystem", journal_mod.flush_filesystem)
        committer._work.set()
        with trio.fail_after(10):
            while len(live_segments(area)) > 1:  # noqa: ASYNC110 - retried, then freed
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def lone_commits(tmp_path, monkeypatch, n: int, flush_delay: float):
    """`n` commits one after another by a lone session; -> (committer, recorder, stems)."""
    reports, area, spool = committer_dirs(tmp_path)
    rec = Recorder(reports, area, set(), flush_delay)
    monkeypatch.setattr(commit_mod.os, "fdatasync", rec.fdatasync)
    stems = []
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        committer.lone_session = lambda: True
        for i in range(n):
            w = spool.open_message("pop3", {"pop3": {"user": "u", "uidl": str(i), "msg": i}})
            w.write(b"Subject: lone\r\n\r\nbody\r\n")
            await committer.commit(w, "delivered", None)
            rec.ack(w.stem)
            stems.append(w.stem)
        nursery.cancel_scope.cancel()
    return committer, rec, stems


async def test_a_lone_session_commits_on_the_loop_after_its_flush(tmp_path, monkeypatch):
    # the recorder's own checks make a barrier slow: this test is about the mechanism
    monkeypatch.setattr(commit_mod, "INLINE_BARRIER_MAX", 10.0)
    committer, rec, stems = await lone_commits(tmp_path, monkeypatch, 6, 0.0)
    # the first commit goes to the thread (no barrier measured yet), the others inline
    assert committer.inline_batches == 5
    assert committer.batches == 6
    check_acks(rec, {s: 10 for s in stems})


async def test_inline_commits_leave_the_committer_thread_asleep(tmp_path, monkeypatch):
    # A wake of the idle thread after every inline batch cost two context switches per
    # POP3 RETR (measured: 2.9 voluntary switches of the commit thread per RETR -> 0.06).
    monkeypatch.setattr(commit_mod, "INLINE_BARRIER_MAX", 10.0)
    notified = []

    class Counting(threading.Condition):
        def notify(self, n: int = 1) -> None:
            notified.append(self)
            super().notify(n)

    monkeypatch.setattr(commit_mod.threading, "Condition", Counting)
    committer, rec, stems = await lone_commits(tmp_path, monkeypatch, 6, 0.0)
    assert committer.inline_batches == 5
    # the first commit was queued for the thread (one notify); the stop wakes it once
    # more; the five inline batches found nothing queued and woke nobody
    assert notified.count(committer._cond) == 2
    check_acks(rec, {s: 10 for s in stems})


async def test_slow_barriers_keep_even_a_lone_session_off_the_loop(tmp_path, monkeypatch):
    # a barrier over INLINE_BARRIER_MAX: blocking the loop for it is never worth it
    monkeypatch.setattr(commit_mod, "INLINE_BARRIER_MAX", 0.02)
    delay = 0.04
    committer, rec, stems = await lone_commits(tmp_path, monkeypatch, 4, delay)
    assert committer.inline_batches == 0
    check_acks(rec, {s: 10 for s in stems})


async def test_room_is_measured_again_when_the_margin_or_the_directory_changes(
    tmp_path, monkeypatch
):
    reports, area, spool = committer_dirs(tmp_path)
    measured = []
    real_statvfs = os.statvfs

    def statvfs(path):
        measured.append(path)
        return real_statvfs(path)

    monkeypatch.setattr(commit_mod.os, "statvfs", statvfs)
    monkeypatch.setattr(commit_mod, "ROOM_MARGIN", 1)  # any real disk has twice that free

    async def one(committer):
        w = spool.open_message("smtp", {"smtp": {"mail_from": "a@x"}})
        w.write(b"Subject: room\r\n\r\nbody\r\n")
        await committer.commit(w)

    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        await one(committer)
        assert len(measured) == 1
        monkeypatch.setattr(commit_mod, "ROOM_MARGIN", 10 * 1024 * 1024)
        await one(committer)  # the spare budget of 1 byte is spent: measured again
        await one(committer)
        await one(committer)
        assert len(measured) == 2
        reports.chmod(0o500)  # another directory state: measured again
        await one(committer)
        assert len(measured) == 3
        reports.chmod(0o750)
        nursery.cancel_scope.cancel()


async def test_a_pair_that_cannot_be_written_is_retried_with_a_backoff(
    tmp_path, monkeypatch, caplog
):
    """A report directory that refuses pairs for a while: the committed messages keep
    their bytes (memory and journal), one line is logged per failed pass, and every pair
    is written once the directory works again (nothing waits for a restart).

    The failure is real, in the pair writer's own process: the report directory's name
    is taken by a file (so even root gets ENOTDIR) while the pairs are due."""
    reports, area, spool = committer_dirs(tmp_path)
    monkeypatch.setattr(commit_mod, "PAIR_RETRY_FIRST", 0.05)
    caplog.set_level("ERROR", logger="mailtee.commit")
    aside = tmp_path / "reports.aside"
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        committer._write_after = float("inf")  # hold the writer until the directory breaks
        writers = []
        for i in range(3):
            w = spool.open_message("pop3", {"pop3": {"user": "u", "uidl": str(i), "msg": i}})
            w.write(b"Subject: %d\r\n\r\nbody\r\n" % i)
            await committer.commit(w, "delivered", None)
            writers.append(w)
        reports.rename(aside)
        reports.write_bytes(b"not a directory")
        committer._write_after = 0.0
        committer._work.set()
        await trio.sleep(0.4)  # several passes: the first fails, then backoff 0.05, 0.1, 0.2
        failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert 1 <= len(failures) <= 4, [r.getMessage() for r in failures]
        assert "Not a directory" in failures[0].getMessage()
        assert "kept in the journal" in failures[0].getMessage()
        assert committer._unwritten == sum(w.size for w in writers)
        reports.unlink()
        aside.rename(reports)
        assert not list(reports.glob("*.eml"))
        with trio.fail_after(5):
            while committer._unwritten or len(list(reports.glob("*.mpr"))) < 3:  # noqa: ASYNC110
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    for w in writers:
        assert (reports / f"{w.stem}.eml").read_bytes().startswith(b"Subject: ")
        assert json.loads((reports / f"{w.stem}.mpr").read_text())["upstream"]["outcome"] == (
            "delivered"
        )
    assert not list(reports.glob(".*.tmp"))


async def test_a_killed_pair_writer_is_started_again_and_loses_nothing(tmp_path, caplog):
    """kill -9 of the pair writer process: the pairs it had not written are written by
    the next one, from the journal, and the memory they held is given back."""
    reports, area, spool = committer_dirs(tmp_path)
    caplog.set_level("ERROR", logger="mailtee.commit")
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        w = spool.open_message("pop3", {"pop3": {"user": "u", "uidl": "first", "msg": 1}})
        w.write(b"Subject: first\r\n\r\nbody\r\n")
        await committer.commit(w, "delivered", None)
        with trio.fail_after(5):
            while not (reports / f"{w.stem}.mpr").exists():  # noqa: ASYNC110
                await trio.sleep(0.01)
        first_pid = committer.pairs.pid
        assert first_pid is not None and committer.pairs.starts == 1
        os.kill(first_pid, 9)
        writers = []
        for i in range(5):
            w = spool.open_message("pop3", {"pop3": {"user": "u", "uidl": str(i), "msg": i}})
            w.write(b"Subject: %d\r\n\r\n" % i + os.urandom(3000).hex().encode() + b"\r\n")
            await committer.commit(w, "delivered", None)
            writers.append(w)
        with trio.fail_after(10):
            while committer._unwritten or len(list(reports.glob("*.mpr"))) < 6:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert committer.pairs.starts == 2 and committer.pairs.pid != first_pid
        assert committer.snapshot()["pair_writer_starts"] == 2  # `status` shows it
        nursery.cancel_scope.cancel()
    for w in writers:
        eml = (reports / f"{w.stem}.eml").read_bytes()
        assert len(eml) == w.size and hashlib.sha256(eml).hexdigest() == w.sha256
    assert committer.pairs.pid is None  # stopped with the committer


async def test_the_pair_writer_never_writes_bytes_that_are_not_the_message(tmp_path, caplog):
    """A journal record whose bytes no longer match the report's SHA-256 (damaged
    under the worker): no `.eml` from it, one error line; the bytes the worker still
    holds in memory are written at shutdown instead."""
    reports, area, spool = committer_dirs(tmp_path)
    caplog.set_level("ERROR", logger="mailtee.commit")
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        committer._write_after = float("inf")  # hold the writer while the record is damaged
        w = spool.open_message("pop3", {"pop3": {"user": "u", "uidl": "x", "msg": 1}})
        w.write(b"Subject: x\r\n\r\nthe message\r\n")
        await committer.commit(w, "delivered", None)
        path, hoff, hlen, dlen = committer._pending[w.stem].record
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"X", hoff + hlen + dlen - 3)
        os.close(fd)
        committer._write_after = 0.0
        committer._work.set()
        with trio.fail_after(5):
            while not caplog.records:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert "does not hold the message" in caplog.records[0].getMessage()
        assert not (reports / f"{w.stem}.eml").exists()
        nursery.cancel_scope.cancel()
    assert (reports / f"{w.stem}.eml").read_bytes() == b"Subject: x\r\n\r\nthe message\r\n"


async def test_the_pair_writer_writes_the_report_write_mpr_would(tmp_path):
    """The `.mpr` the pair writer builds from the journal record is byte for byte the
    one `MessageWriter.write_mpr` writes (Japanese text, a reply, key order)."""
    reports, area, spool = committer_dirs(tmp_path)
    sections = {
        "pop3": {"user": "山田", "uidl": "ユー", "msg": 3},
        "client": {"name": "東京オフィス", "ip": "127.0.0.1"},
    }
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        w = spool.open_message("pop3", sections)
        w.write("Subject: =?UTF-8?B?5pel5pys6Kqe?=\r\n\r\n日本語\r\n".encode())
        await committer.commit(w, "pending", None)
        committer.record_outcome(w, "rejected", "550 5.7.1 拒否")
        with trio.fail_after(5):
            while committer._pending:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    written = (reports / f"{w.stem}.mpr").read_bytes()
    (reports / f"{w.stem}.mpr").unlink()
    assert w.write_mpr("rejected", "550 5.7.1 拒否")
    assert written == (reports / f"{w.stem}.mpr").read_bytes()
    assert json.loads(written)["upstream"] == {"outcome": "rejected", "reply": "550 5.7.1 拒否"}


async def test_a_spilled_message_is_never_committed_on_the_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(commit_mod, "INLINE_BARRIER_MAX", 10.0)
    reports, area, spool = committer_dirs(tmp_path)
    async with trio.open_nursery() as nursery:
        committer = await nursery.start(GroupCommitter(reports, area).run)
        committer.lone_session = lambda: True
        for size in (100, SPILL_BYTES + 10, 100):
            w = spool.open_message("pop3", {"pop3": {"user": "u", "uidl": str(size), "msg": 1}})
            w.write(b"x" * size)
            await committer.commit(w, "delivered", None)
        nursery.cancel_scope.cancel()
    # the first goes to the thread (nothing measured yet), the spilled one too
    assert committer.inline_batches == 1 and committer.batches == 3
