"""search_page counts and sorts in one index pass (archive/index.py): every page and total
agree with the newest-first list of all matches, for words, phrases, fields, negation,
a user's mail and the windowed path of very common words."""

from __future__ import annotations

from pathlib import Path

import pytest
from archive_helpers import make_message, write_report

from archive import index as index_mod
from archive.store import Archive


@pytest.fixture
def filled(archive: Archive, state: Path) -> Archive:
    for i in range(40):
        body = "the quarterly report" if i % 2 else "a report on the quarter"
        if i % 5 == 0:
            body += " invoice attached"
        raw = make_message(
            subject=f"status {i}",
            body=body,
            frm="Carol <carol@example.org>" if i % 3 else "Dave <dave@example.org>",
            date=f"Tue, {1 + i % 28:02d} Dec 2026 {i % 24:02d}:00:00 +0000",
        )
        write_report(state / "reports", raw, rcpt=["bob@example.com"])
    assert archive.ingest_pending(state / "reports").new_messages == 40
    return archive


QUERIES = ["report", '"quarterly report"', "from:dave@example.org", "report -invoice", "status"]


@pytest.mark.parametrize("query", QUERIES)
def test_pages_and_totals_agree_with_all_matches(filled: Archive, query: str) -> None:
    everything, total = filled.search_page(query, limit=1000)
    assert total == len(everything) > 0
    dates = [h.date for h in everything]
    assert dates == sorted(dates, reverse=True)
    for limit in (1, 7, 50):
        for offset in (0, 3, 35):
            page, n = filled.search_page(query, limit=limit, offset=offset)
            assert n == total
            assert [h.id for h in page] == [h.id for h in everything[offset : offset + limit]]
    page, n = filled.search_page(query, limit=5, count=False)
    assert n == -1 and [h.id for h in page] == [h.id for h in everything[:5]]
    assert filled.search_page(query, limit=0) == ([], total)


def test_common_words_take_the_windowed_path_with_the_same_answer(
    filled: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, total = filled.search_page("report", limit=10)
    monkeypatch.setattr(index_mod, "WINDOW_MIN_DOCS", 1)  # every body word is "common" now
    windowed, n = filled.search_page("report", limit=10)
    assert (n, [h.id for h in windowed]) == (total, [h.id for h in plain])


def test_a_limit_beyond_any_count_is_all_matches(filled: Archive) -> None:
    everything, total = filled.search_page("report", limit=1000)
    huge, n = filled.search_page("report", limit=10**30)  # `search -n 10**30`: no OverflowError
    assert (n, [h.id for h in huge]) == (total, [h.id for h in everything])
    assert filled.search_page("report", limit=10**30, offset=10**25) == ([], total)
