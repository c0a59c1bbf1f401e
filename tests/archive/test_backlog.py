"""`status`'s report backlog: reports not ingested yet, not every file in the directory."""

from __future__ import annotations

from pathlib import Path

from archive_helpers import jp_message, make_message, write_report

from archive.reports import backlog
from archive.store import Archive


def test_backlog_counts_only_reports_waiting_for_ingest(tmp_path: Path) -> None:
    assert backlog(tmp_path) is None  # no report directory yet
    reports = tmp_path / "reports"
    reports.mkdir()
    assert backlog(tmp_path) == 0
    write_report(reports, jp_message())
    write_report(reports, make_message("one"))
    assert backlog(tmp_path) == 2  # no catalog yet: everything waits
    with Archive(tmp_path) as archive:
        archive.ingest_pending(reports)
    assert backlog(tmp_path) == 0
    write_report(reports, make_message("two"))
    assert backlog(tmp_path) == 1
    assert not (tmp_path / "nothing" / "archive").exists()
    assert backlog(tmp_path / "nothing") is None
