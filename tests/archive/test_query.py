"""The search syntax parser (pure data)."""

from __future__ import annotations

import pytest

from archive.query import Clause, QueryError, parse_query


def test_free_text_fields_phrases_and_negation() -> None:
    q = parse_query('invoice "quarterly report" from:alice@example.com -subject:spam 請求書')
    assert q.clauses == (
        Clause("text", "invoice"),
        Clause("text", "quarterly report"),
        Clause("from", "alice@example.com"),
        Clause("subject", "spam", negated=True),
        Clause("text", "請求書"),
    )
    assert parse_query('subject:"a b"').clauses == (Clause("subject", "a b"),)
    assert parse_query("re:hello").clauses == (Clause("text", "re:hello"),)


def test_dates_sizes_has() -> None:
    q = parse_query("after:2026-01-01 before:2026/02/01 size>100k size<=2M has:attachment")
    assert q.clauses == (
        Clause("date", low=1767225600),
        Clause("date", high=1769904000),
        Clause("size", low=102401),
        Clause("size", high=2 * 1024 * 1024 + 1),
        Clause("has", "attachment"),
    )
    assert parse_query("date:2026-01-01").clauses == (
        Clause("date", low=1767225600, high=1767225600 + 86400),
    )


@pytest.mark.parametrize("bad", ["after:tomorrow", "has:pdf", 'subject:"open', "from:"])
def test_errors_are_query_errors(bad: str) -> None:
    with pytest.raises(QueryError):
        parse_query(bad)
