"""Report retention (issue 10 item 11): the report folder is a hand-over point.

The service's ingest removes a pair once it is committed to the archive (retention 0),
or `report_retention` after that; a report still "pending" waits for its verdict; the
archive keeps every message whatever the folder holds. `status` says what happens.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest
import trio
from archive_helpers import make_message, write_report

from admin.config import Config
from archive import retention
from archive.retention import parse_duration, retention_status
from archive.store import Archive
from proxy.ingest_task import ingest_loop


def _archived(state: Path) -> int:
    with Archive(state) as a:
        return a.count()


async def _run_until(state: Path, retention_s: float, done, limit: float = 30.0) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(ingest_loop, state, interval=0.05, retention=retention_s))
        with trio.fail_after(limit):
            while not done():  # noqa: ASYNC110 - polls the file system
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


async def test_pairs_are_removed_once_archived_and_pending_ones_wait(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    final = [write_report(reports, make_message(f"m{i}"), outcome="delivered") for i in range(3)]
    pending = write_report(reports, make_message(f"m{99}"), outcome="pending")
    await _run_until(tmp_path, 0.0, lambda: not any(w.mpr_path.exists() for w in final))
    assert not any(w.eml_path.exists() for w in final)
    assert pending.mpr_path.exists() and pending.eml_path.exists()  # verdict not known
    assert _archived(tmp_path) == 4
    # the verdict arrives (the .mpr is rewritten): archived again as updated, then removed
    pending.set_outcome("delivered", "250 ok")
    await _run_until(tmp_path, 0.0, lambda: not pending.mpr_path.exists())
    assert not pending.eml_path.exists() and _archived(tmp_path) == 4


class _Later:
    """`time` as seen from `seconds` in the future (the sweep's clock)."""

    def __init__(self, seconds: float) -> None:
        self.offset = int(seconds * 1e9)

    def time_ns(self) -> int:
        return time.time_ns() + self.offset


def test_retention_keeps_pairs_until_they_are_old(tmp_path: Path, monkeypatch) -> None:
    reports = tmp_path / "reports"
    pairs = [write_report(reports, make_message(f"m{i}"), outcome="delivered") for i in (1, 2)]
    with Archive(tmp_path) as a:
        a.ingest_pending(reports)
        assert a.sweep_reports(reports, parse_duration("1h")) == 0  # younger than 1h
        monkeypatch.setattr(retention, "time", _Later(1800))
        assert a.sweep_reports(reports, parse_duration("1h")) == 0
        monkeypatch.setattr(retention, "time", _Later(3700))
        assert a.sweep_reports(reports, parse_duration("1h")) == 2
    assert not any(w.mpr_path.exists() or w.eml_path.exists() for w in pairs)
    assert _archived(tmp_path) == 2


def test_pending_reports_are_kept_for_the_grace_period(tmp_path: Path, monkeypatch) -> None:
    reports = tmp_path / "reports"
    w = write_report(reports, make_message("m4"), outcome="pending")
    with Archive(tmp_path) as a:
        a.ingest_pending(reports)
        monkeypatch.setattr(retention, "time", _Later(600))  # past 5m, within the grace
        assert a.sweep_reports(reports, parse_duration("5m")) == 0
        monkeypatch.setattr(retention, "time", _Later(retention.PENDING_GRACE + 10))
        assert a.sweep_reports(reports, parse_duration("5m")) == 1
    assert not w.eml_path.exists()


def test_a_report_not_yet_ingested_is_never_removed(tmp_path: Path, monkeypatch) -> None:
    reports = tmp_path / "reports"
    w = write_report(reports, make_message("m5"), outcome="delivered")
    with Archive(tmp_path) as a:
        monkeypatch.setattr(retention, "time", _Later(86400))
        assert a.sweep_reports(reports, 0.0) == 0
    assert w.mpr_path.exists()


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="report_retention"):
        Config(report_retention="soon")


def test_status_says_what_happens(tmp_path: Path) -> None:
    write_report(tmp_path / "reports", make_message(f"m{4}"), outcome="delivered")
    st = retention_status(tmp_path, Config())
    assert st["report_retention"] == "5m" and st["reports_in_folder"] == 1
    assert st["report_retention_note"] == "reports are removed 5m after they are archived"
    assert (
        "removed once archived"
        in retention_status(tmp_path, Config(report_retention="0"))["report_retention_note"]
    )
