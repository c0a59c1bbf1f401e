"""Crash safety: kill the ingest at every commit point, and with kill -9 at random."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from archive_helpers import make_message

from archive.store import Archive

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import os, sys
from pathlib import Path
import archive.ingest as ing
from archive.store import Archive
state, batch, point, nth = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ing.BATCH_ITEMS = batch
seen = {"n": 0}
def hook(name):
    if name == point:
        seen["n"] += 1
        if seen["n"] == nth:
            os._exit(9)
ing.crash_hook = hook
a = Archive(state)
a.ingest_pending(state / "reports")
print("finished")
"""


def write_pairs(reports: Path, count: int, distinct: int) -> set[str]:
    """`count` report pairs (no fsync: fast) over `distinct` different messages."""
    shas = set()
    for i in range(count):
        n = i % distinct
        raw = make_message(
            f"message {n}",
            f"body of message {n} 請求書{n}",
            msgid=f"<{n}@example.com>",
            to=f"user{n % 7}@example.com",
        )
        sha = hashlib.sha256(raw).hexdigest()
        shas.add(sha)
        ident = str(uuid.UUID(int=i + 1, version=4))
        stem = f"20261126T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}Z-smtp-{ident}"
        doc = {
            "format": "mailtee-mpr",
            "version": 1,
            "id": ident,
            "protocol": "smtp",
            "received_at": "2026-11-26T10:15:00.123Z",
            "direction": "outgoing",
            "listener": "smtp",
            "client": {"ip": "192.0.2.10", "port": 1, "tls": None},
            "smtp": {
                "helo": "pc",
                "mail_from": "a@example.com",
                "rcpt_to": [f"user{n % 7}@example.com"],
                "auth_user": None,
            },
            "pop3": None,
            "size": len(raw),
            "sha256": sha,
            "upstream": {"outcome": "delivered", "reply": "250 ok"},
        }
        (reports / f"{stem}.eml").write_bytes(raw)
        (reports / f"{stem}.mpr").write_text(json.dumps(doc))
    return shas


def run_driver(state: Path, batch: int, point: str = "none", nth: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(state), str(batch), point, str(nth)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def assert_consistent(state: Path, distinct: set[str], reports: int) -> None:
    a = Archive(state)
    try:
        stats = a.ingest_pending(state / "reports")
        assert stats.errors == []
        assert a.count() == len(distinct)
        assert a.index.count() == a.count()
        assert a.index.all_shas() == distinct
        rows = a.catalog.query("SELECT COUNT(*), COUNT(DISTINCT uuid) FROM reports")[0]
        assert tuple(rows) == (reports, reports)
        result = a.verify()
        assert result.problems == [] and result.blobs_ok == len(distinct)
        assert len(a.search("請求書1", limit=1000)) == 1
    finally:
        a.close()


@pytest.mark.parametrize("point", ["packs", "index", "catalog"])
def test_crash_at_each_commit_point(tmp_path: Path, point: str) -> None:
    (tmp_path / "reports").mkdir()
    distinct = write_pairs(tmp_path / "reports", 120, 100)
    proc = run_driver(tmp_path, 50, point, 2)  # dies after the 2nd batch's commit `point`
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 9, err.decode()
    assert_consistent(tmp_path, distinct, 120)


def test_kill_9_during_ingest_of_5000(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    distinct = write_pairs(tmp_path / "reports", 5000, 4500)
    catalog = tmp_path / "archive" / "catalog.sqlite"
    kills = 0
    for threshold in (300, 2200):
        proc = run_driver(tmp_path, 250)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=1) as db:
                    n = db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= threshold:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.02)
        proc.communicate(timeout=60)
    assert kills >= 1
    assert_consistent(tmp_path, distinct, 5000)
