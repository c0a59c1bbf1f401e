"""compact is crash-safe: kill -9 at each step, or at random, leaves a store that verifies."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from maintenance_helpers import add_each, dated, search_ids

from archive import maintenance as mt
from archive.store import Archive

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import os, signal, sys
from pathlib import Path
import archive.maintenance as mt
from archive.store import Archive
state, point = Path(sys.argv[1]), sys.argv[2]
def hook(name):
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)
mt.crash_hook = hook
if point == "slow":  # a slow disk: give a random kill time to land mid-way
    import time
    from archive import packs
    append = packs.PackWriter.append
    def slow_append(self, raw, sha):
        time.sleep(0.002)
        return append(self, raw, sha)
    packs.PackWriter.append = slow_append
a = Archive(state)
print("start", flush=True)
mt.compact(a)
print("finished", flush=True)
"""

QUERIES = ["invoice", "report", "quarterly numbers 3", "-report"]


def _snapshot(state: Path) -> dict[str, list[int]]:
    return {q: search_ids(state, q) for q in QUERIES}


def _check_recovered(state: Path, before: dict[str, list[int]], n: int) -> None:
    with Archive(state) as a:
        report = mt.verify(a)
        assert report.ok, report.as_dict()
        assert a.count() == n
    assert _snapshot(state) == before
    # ingest carries on, a new compact completes and cleans up everything left over
    add_each(state, [dated(1000 + n, "after the crash")])
    with Archive(state) as a:
        mt.compact(a)
        report = mt.verify(a)
        assert report.ok and report.unreferenced_blobs == 0, report.as_dict()
        assert len(a.packs.numbers()) == 1
        for i in range(1, n + 1):
            a.get_raw(i)
    assert not (state / "archive" / "compact.tmp").exists()
    assert search_ids(state, "subject:crash") == [n + 1]


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, int]:
    (tmp_path / "reports").mkdir()
    n = 12
    add_each(tmp_path, [dated(i) for i in range(1, n + 1)])
    return tmp_path, n


@pytest.mark.parametrize("point", ["written", "renamed", "committed", "deleted"])
def test_kill_9_at_each_compact_step(filled: tuple[Path, int], point: str) -> None:
    state, n = filled
    before = _snapshot(state)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(state), point],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "finished" not in proc.stdout
    _check_recovered(state, before, n)


def test_kill_9_at_random_during_compact(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    n = 150
    for start in range(1, n + 1, 30):  # several records, several ingest batches
        add_each(tmp_path, [dated(i) for i in range(start, start + 30)])
    # one record per ingest call above; make them small so compact has work to do
    before = _snapshot(tmp_path)
    rng = random.Random(6)
    interrupted = 0
    for _ in range(4):
        with subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(tmp_path), "slow"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "start"
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            interrupted += "finished" not in proc.stdout.read()
        with Archive(tmp_path) as a:
            report = mt.verify(a)
            assert report.ok, report.as_dict()
            assert a.count() == n
        assert _snapshot(tmp_path) == before
    assert interrupted, "every compact finished before the kill; the test proved nothing"
    _check_recovered(tmp_path, before, n)
