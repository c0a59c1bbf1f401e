"""backup while another process ingests, restore, relocation of state dir and backup."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from maintenance_helpers import Cli, add_each, dated, one_line_error, search_ids, sql

from archive.store import Archive

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Writes reports and ingests them in small batches, like `proxy-admin run` does.
INGESTER = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[3]]
from archive_helpers import write_report
from maintenance_helpers import dated
from archive.store import Archive
state, n = Path(sys.argv[1]), int(sys.argv[2])
a = Archive(state)
for i in range(1, n + 1):
    write_report(state / "reports", dated(i))
    if i % 5 == 0 or i == n:
        while a.ingest_pending(state / "reports", max_items=5).pending:
            pass
        a._dir_mtime.clear()
a.close()
print("done")
"""

QUERIES = ["invoice", "report", "quarterly numbers 7", "-invoice", "date:2026-11-24"]


def _count(state: Path) -> int:
    try:
        return sql(state, "SELECT COUNT(*) FROM messages")[0][0]
    except Exception:
        return 0


def test_backup_while_another_process_ingests_then_restore(tmp_path: Path) -> None:
    src = Cli(tmp_path / "src")
    total = 400
    proc = subprocess.Popen(
        [sys.executable, "-c", INGESTER, str(src.state), str(total), str(HERE)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _count(src.state) < 10:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        online = []
        for k in range(3):
            out = src.json("backup", str(tmp_path / f"bk{k}"))
            online.append((out, proc.poll() is None))
    finally:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "done" in stdout, stderr
    assert online[0][1], "ingest had finished before the first backup; test proves nothing"
    final = src.json("backup", str(tmp_path / "bk-final"))
    assert final["messages"] == total

    expected = {q: search_ids(src.state, q) for q in QUERIES}
    assert len(expected["invoice"]) == total
    for k, (out, _) in enumerate([*online, (final, False)]):
        name = f"bk{k}" if k < len(online) else "bk-final"
        dst = Cli(tmp_path / f"dst-{name}")
        restored = dst.json("restore", str(tmp_path / name))
        m = out["messages"]
        assert restored["messages"] == restored["indexed"] == m
        assert restored["verify"]["ok"] is True and restored["verify"]["damaged"] == []
        assert dst.json("verify")["ok"] is True
        for q in QUERIES:  # the same IDs as the source had for the snapshot's messages
            assert search_ids(dst.state, q) == [i for i in expected[q] if i <= m], (name, q)
        hits = dst.json("search", "invoice", "--limit", "1000")
        assert sorted(h["id"] for h in hits["hits"]) == list(range(1, m + 1))
        with Archive(dst.state) as a, Archive(src.state) as orig:
            assert a.get_raw(m) == orig.get_raw(m)
            head = sql(dst.state, "SELECT chain FROM messages ORDER BY id DESC LIMIT 1")[0][0]
            assert head == out["chain_head"]
        assert "restore" in [r[0] for r in sql(dst.state, "SELECT action FROM audit")]
    assert final["messages"] > online[0][0]["messages"] > 0
    actions = [r[0] for r in sql(src.state, "SELECT action FROM audit")]
    assert actions.count("backup") == 4


def test_backup_manifest_lists_every_file_with_its_hash(tmp_path: Path) -> None:
    src = Cli(tmp_path / "src")
    add_each(src.state, [dated(i) for i in range(1, 4)])
    out = src.json("backup", str(tmp_path / "bk"))
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["format"] == "mailtee-archive-backup" and manifest["version"] == 1
    assert manifest["messages"] == out["messages"] == 3
    paths = [f["path"] for f in manifest["files"]]
    assert paths == ["archive/catalog.sqlite", "archive/packs/pack-000001.mtp"]
    import hashlib

    for f in manifest["files"]:
        data = (tmp_path / "bk" / f["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["size"], f["sha256"])
    assert not (tmp_path / "bk" / "archive" / "catalog.sqlite-wal").exists()


def test_restore_refuses_a_damaged_backup(tmp_path: Path) -> None:
    src = Cli(tmp_path / "src")
    add_each(src.state, [dated(i) for i in range(1, 4)])
    src.json("backup", str(tmp_path / "bk"))
    pack = tmp_path / "bk" / "archive" / "packs" / "pack-000001.mtp"
    data = bytearray(pack.read_bytes())
    data[-2] ^= 1
    pack.write_bytes(bytes(data))
    dst = Cli(tmp_path / "dst")
    one_line_error(dst("restore", str(tmp_path / "bk")), 1, "does not match the backup manifest")
    assert list((dst.state / "archive").iterdir()) == []
    assert not (dst.state / ".archive.restoring").exists()
    (tmp_path / "bk" / "manifest.json").unlink()
    one_line_error(dst("restore", str(tmp_path / "bk")), 1, "no manifest.json")


def test_restore_and_backup_refuse_non_empty_targets(tmp_path: Path) -> None:
    src = Cli(tmp_path / "src")
    add_each(src.state, [dated(1)])
    src.json("backup", str(tmp_path / "bk"))
    one_line_error(src("restore", str(tmp_path / "bk")), 1, "an archive is already there")
    one_line_error(src("backup", str(tmp_path / "bk")), 2, "is not empty")
    one_line_error(src("restore", str(tmp_path / "nowhere")), 2, "no such directory")
    assert search_ids(src.state, "invoice") == [1]


@pytest.mark.parametrize("via_backup", [False, True])
def test_relocated_state_dir_and_backup_work_unchanged(tmp_path: Path, via_backup: bool) -> None:
    first = Cli(tmp_path / "a")
    add_each(first.state, [dated(i) for i in range(1, 6)])
    first.json("store", "seal")
    add_each(first.state, [dated(i) for i in range(6, 9)])
    before = {q: search_ids(first.state, q) for q in QUERIES}
    if via_backup:
        first.json("backup", str(tmp_path / "bk"))
        shutil.move(tmp_path / "bk", tmp_path / "elsewhere" / "moved-bk")
        moved = Cli(tmp_path / "b")
        moved.json("restore", str(tmp_path / "elsewhere" / "moved-bk"))
    else:
        shutil.move(tmp_path / "a", tmp_path / "b")
        moved = Cli(tmp_path / "b", init=False)
    assert moved.state == tmp_path / "b" / "etc" / "state"
    assert {q: search_ids(moved.state, q) for q in QUERIES} == before
    assert moved.json("verify")["ok"] is True
    stores = moved.json("store", "list")["stores"]
    assert [(s["id"], s["sealed"], s["messages"]) for s in stores] == [(1, True, 5), (2, False, 3)]
    shown = moved("show", "3", "--raw")
    assert shown.exit_code == 0 and shown.stdout_bytes == dated(3)
    add_each(moved.state, [dated(9, "after the move")])
    assert search_ids(moved.state, "subject:move") == [9]
    assert moved.json("compact")["messages"] == 4
    assert moved.json("verify")["ok"] is True
