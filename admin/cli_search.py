"""The `search` command's own steps, without typer: the audited search and what it
prints. Both the console script's fast path (admin/cli_fast.py) and the typer command
(admin/cli_archive.py) run these, so that the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from admin.cli_text import clip, display_width, format_table, to_json

if TYPE_CHECKING:
    from archive.store import Archive


def audited_search(archive: Archive, query: str, user: str | None, limit: int) -> tuple[Any, int]:
    """The hits of `query` and their total, with the search's audit row written: the one
    place both paths (admin.cli_fast and admin.cli_archive.search) run a search."""
    hits, total = archive.search_page(query, user=user, limit=limit)
    archive.catalog.audit("search", {"query": query, "user": user, "hits": len(hits)})
    return hits, total


def sender_cell(text: str, width: int) -> str:
    """`Name <addr>` if it fits in `width` columns, else the address alone, uncut (an
    address cut in half is a different address)."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    if text.endswith(">") and "<" in text:
        return text[text.rindex("<") + 1 : -1]
    return text


def size_cell(n: int) -> str:
    for unit in ("B", "K", "M"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}G"


def search_output(
    hits: Sequence[Any], total: int, query: str, user: str | None, json_out: bool
) -> tuple[str | None, str | None]:
    """What `proxy-admin search` prints for its hits (archive.query.Hit): the text for
    stdout and the line for stderr, each without its newline, or None for nothing."""
    if json_out:
        doc = {"query": query, "user": user, "total": total, "hits": [h.as_dict() for h in hits]}
        return to_json(doc), None
    if not hits:
        return None, "no matches"
    rows = [
        (
            h.id,
            h.date[:16].replace("T", " "),
            sender_cell(h.sender, 30),
            clip(h.subject, 60),
            size_cell(h.size),
            "@" if h.has_attachment else "",
        )
        for h in hits
    ]
    table = format_table(("ID", "DATE (UTC)", "FROM", "SUBJECT", "SIZE", "ATT"), rows)
    more = f"({len(hits)} of {total} matches; use --limit for more)" if total > len(hits) else None
    return table, more
