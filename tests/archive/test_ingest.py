"""Ingest from the report directory: content, dedup, provenance, rewrites, search."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from archive_helpers import JP_SUBJECT, ids, jp_message, make_message, write_report

from archive.store import Archive, ArchiveError


def test_japanese_report_is_searchable_and_exact(state: Path, archive: Archive) -> None:
    raw = jp_message(to="hanako@example.jp")
    write_report(state / "reports", raw, rcpt=["hanako@example.jp", "boss@example.jp"])
    write_report(state / "reports", make_message("other", "nothing to see", frm="x@example.org"))
    stats = archive.ingest_pending(state / "reports")
    assert (stats.reports, stats.new_messages, stats.duplicates, stats.errors) == (2, 2, 0, [])
    jp = archive.search("subject:請求書")
    assert len(jp) == 1 and jp[0].subject == JP_SUBJECT
    mid = jp[0].id
    for q in [
        "請求書",
        "請求",
        "書",
        "至急",
        "送付について",
        "お世話になって",
        "bcc:boss@example.jp",
        "to:hanako",
        "from:alice@example.com",
        "請求書 from:alice",
    ]:
        assert ids(archive.search(q)) == [mid], q
    for q in ["subject:お世話", "請求書 -subject:至急", "書類", "to:boss@example.jp"]:
        assert archive.search(q) == [], q
    data = archive.get_raw(mid)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(raw).hexdigest()
    assert archive.get_raw(jp[0].sha256) == raw


def test_rerun_is_a_no_op(state: Path, archive: Archive) -> None:
    for i in range(5):
        write_report(state / "reports", make_message(f"m{i}", f"body {i}"))
    assert archive.ingest_pending(state / "reports").new_messages == 5
    again = archive.ingest_pending(state / "reports")
    assert (again.reports, again.new_messages) == (0, 0)
    fresh = Archive(state)
    try:
        assert fresh.ingest_pending(state / "reports").reports == 0
        assert fresh.count() == 5 and fresh.index.count() == 5
    finally:
        fresh.close()


def test_same_bytes_twice_adds_provenance_not_a_copy(state: Path, archive: Archive) -> None:
    raw = make_message("leave on server", "same bytes", to="carol@example.com")
    write_report(state / "reports", raw, "pop3", pop3_user="carol", outcome="delivered")
    archive.ingest_pending(state / "reports")
    write_report(state / "reports", raw, "pop3", pop3_user="carol2", outcome="delivered")
    stats = archive.ingest_pending(state / "reports")
    assert (stats.new_messages, stats.duplicates) == (0, 1)
    assert archive.count() == 1 and archive.index.count() == 1
    info = archive.get_message(1)
    assert sorted(r["pop3_user"] for r in info["reports"]) == ["carol", "carol2"]
    packs = list((archive.root / "packs").glob("*.mtp"))
    assert len(packs) == 1 and packs[0].stat().st_size < 2 * len(raw)


def test_rewritten_report_updates_provenance(state: Path, archive: Archive) -> None:
    w = write_report(state / "reports", make_message(), rcpt=["bob@example.com"])
    archive.ingest_pending(state / "reports")
    assert archive.get_message(1)["reports"][0]["outcome"] == "pending"
    w.set_outcome("delivered", "250 2.0.0 Ok: queued as 4F1")
    stats = archive.ingest_pending(state / "reports")
    assert (stats.reports, stats.updated_reports, stats.new_messages) == (1, 1, 0)
    reports = archive.get_message(1)["reports"]
    assert [(r["outcome"], r["reply"]) for r in reports] == [
        ("delivered", "250 2.0.0 Ok: queued as 4F1")
    ]


def test_work_in_progress_and_uncommitted_files_are_skipped(state: Path, archive: Archive) -> None:
    reports = state / "reports"
    stem = "20261126T101500Z-smtp-0b5e8c1e-0000-4000-8000-000000000001"
    (reports / f"{stem}.eml").write_bytes(make_message())  # no .mpr yet: not committed
    (reports / f".{stem}.mpr.tmp").write_text("{}")
    (reports / "notes.mpr").write_text("not a report name")
    assert archive.ingest_pending(reports).reports == 0
    assert archive.count() == 0


def test_bad_report_is_reported_not_fatal(state: Path, archive: Archive) -> None:
    reports = state / "reports"
    write_report(reports, make_message("good"))
    stem = "20261126T101500Z-smtp-0b5e8c1e-0000-4000-8000-000000000002"
    (reports / f"{stem}.eml").write_bytes(b"x")
    (reports / f"{stem}.mpr").write_text("{not json")
    stats = archive.ingest_pending(reports)
    assert stats.new_messages == 1
    assert stats.errors == [f"{stem}.mpr: not valid JSON"]


def test_eml_not_matching_its_report_is_kept_and_flagged(state: Path, archive: Archive) -> None:
    w = write_report(state / "reports", make_message("orig"))
    w.eml_path.write_bytes(make_message("changed after the fact"))
    stats = archive.ingest_pending(state / "reports")
    assert stats.new_messages == 1 and "does not match" in stats.errors[0]
    assert archive.search("changed")[0].subject == "changed after the fact"


def test_search_newest_first_and_filters(state: Path, archive: Archive) -> None:
    dates = [
        "Mon, 02 Nov 2026 09:00:00 +0000",
        "Tue, 03 Nov 2026 09:00:00 +0000",
        "Wed, 04 Nov 2026 09:00:00 +0000",
    ]
    for i, d in enumerate(dates):
        write_report(state / "reports", make_message(f"report {i}", "quarterly numbers", date=d))
    big = make_message("big one", "quarterly " + "x" * 5000, date=dates[0])
    write_report(state / "reports", big)
    archive.ingest_pending(state / "reports")
    hits = archive.search("quarterly")
    assert [h.subject for h in hits] == ["report 2", "report 1", "report 0", "big one"] or [
        h.subject for h in hits
    ] == ["report 2", "report 1", "big one", "report 0"]
    assert [h.subject for h in archive.search("after:2026-11-03")] == ["report 2", "report 1"]
    assert [h.subject for h in archive.search("before:2026-11-03 size>4k")] == ["big one"]
    assert [h.subject for h in archive.search('"quarterly numbers" date:2026-11-03')] == [
        "report 1"
    ]
    assert len(archive.search("quarterly", limit=2)) == 2


def _cpython_email_data() -> Path | None:
    try:
        import test.test_email  # noqa: F401
    except ImportError:
        return None
    path = Path(sys.modules["test.test_email"].__file__).parent / "data"  # type: ignore[arg-type]
    return path if path.is_dir() else None


def test_cpython_email_test_corpus_ingests(state: Path, archive: Archive) -> None:
    data = _cpython_email_data()
    if data is None:
        pytest.skip("CPython's test.test_email data is not installed (python3-test package)")
    files = sorted(p for p in data.iterdir() if p.is_file())
    assert len(files) > 30
    for p in files:
        write_report(state / "reports", p.read_bytes())
    stats = archive.ingest_pending(state / "reports")
    distinct = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert stats.errors == []
    assert stats.reports == len(files)
    assert archive.count() == len(distinct) == archive.index.count()
    for p in files:
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        assert archive.get_raw(sha) == p.read_bytes()
    assert archive.verify().problems == []


def test_verify_detects_catalog_tampering(state: Path, archive: Archive) -> None:
    for i in range(3):
        write_report(state / "reports", make_message(f"m{i}"))
    archive.ingest_pending(state / "reports")
    assert archive.verify().problems == []
    with archive.catalog.transaction() as conn:
        conn.execute("UPDATE messages SET report_hash = ? WHERE id = 2", ("0" * 64,))
    assert archive.verify().problems == ["message 2: hash chain broken"]


def test_index_rebuild_restores_search(state: Path, archive: Archive) -> None:
    write_report(state / "reports", jp_message())
    archive.ingest_pending(state / "reports")
    shutil_rmtree(archive.root / "index")
    fresh = Archive(state)
    try:
        assert fresh.search("請求書") == []
        assert fresh.rebuild_index() == 1
        assert len(fresh.search("請求書")) == 1
    finally:
        fresh.close()


def shutil_rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    os.rmdir(path)


def test_incompatible_index_is_refused_then_reset_and_rebuilt(state: Path) -> None:
    import tantivy

    a = Archive(state)
    write_report(state / "reports", jp_message())
    a.ingest_pending(state / "reports")
    a.close()
    shutil_rmtree(state / "archive" / "index")
    b = tantivy.SchemaBuilder()
    b.add_text_field("other")
    (state / "archive" / "index").mkdir()
    tantivy.Index(b.build(), path=str(state / "archive" / "index"))  # an older layout
    with pytest.raises(ArchiveError, match="another mailtee version"):
        Archive(state)
    fresh = Archive(state, reset_index=True)
    try:
        assert fresh.search("請求書") == []
        assert fresh.rebuild_index() == 1
        assert len(fresh.search("請求書")) == 1
        assert list((state / "archive").glob("index.old-*"))
    finally:
        fresh.close()
