"""What the pages show, computed from the archive (blocking; called via trio.to_thread).

No Starlette here: these functions take an `Archive` and plain values and return dicts
the templates render, so they are testable without a server. Access rules live here too:
`visible()` is the one place that decides whether a person may see a message.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from markupsafe import Markup, escape

from archive.store import Archive, Hit

from . import blobs
from .parts import Part, Structure, header_text, scan, text_of
from .sanitize import clean_html

PAGE_SIZE = 50
#: A direction filter is applied to index matches in the catalog; it looks at most at
#: this many matches (the count then reads "N+").
MAX_DIRECTION_SCAN = 20_000
DIRECTIONS = ("incoming", "outgoing", "archived")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def visible(archive: Archive, user: str, role: str, message_id: int) -> bool:
    """May this person see this message? Auditors and admins see everything that exists;
    a user only what the ownership rules give them (archive/users.py)."""
    if role in ("auditor", "admin"):
        return archive.catalog.one("SELECT 1 FROM messages WHERE id = ?", (message_id,)) is not None
    row = archive.catalog.one(
        "SELECT 1 FROM ownership o JOIN users u ON u.id = o.user "
        "WHERE u.name = ? AND o.message = ?",
        (user, message_id),
    )
    return row is not None


def scope_user(user: str, role: str) -> str | None:
    """The `user=` argument of Archive.search for this person (None = everyone's mail)."""
    return None if role in ("auditor", "admin") else user


# --- formatting ------------------------------------------------------------------------


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def time_html(iso: str, zone: str) -> Markup:
    """A <time>: in the configured zone, or UTC that app.js turns into the browser's."""
    if not iso:
        return Markup("")
    if not _ISO.match(iso):
        return Markup(escape(iso))
    if zone:
        when = dt.datetime.fromisoformat(iso[:19]).replace(tzinfo=dt.UTC)
        local = when.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
        return Markup(f'<time datetime="{iso[:19]}Z">{local}</time>')
    # checked by _ISO above: digits and separators only, nothing to escape
    return Markup(f'<time datetime="{iso[:19]}Z" data-local>{iso[:10]} {iso[11:16]} UTC</time>')


def _addr_list(values: list[str]) -> str:
    return ", ".join(values)


# --- search ----------------------------------------------------------------------------


def build_query(q: str, after: str, before: str) -> str:
    """The query language string for the search box plus the date fields."""
    parts = [q.strip()] if q.strip() else []
    if _DAY.match(after or ""):
        parts.append(f"after:{after}")
    if _DAY.match(before or ""):
        day = dt.date.fromisoformat(before) + dt.timedelta(days=1)  # the "to" day is inclusive
        parts.append(f"before:{day.isoformat()}")
    return " ".join(parts)


@dataclass
class Row:
    id: int
    date: str
    date_html: Markup
    sender: str
    to: str
    subject: str
    size: str
    has_attachment: bool
    direction: str


def _extras(archive: Archive, ids: list[int]) -> tuple[dict[int, str], dict[int, list[str]]]:
    arg = json.dumps(ids)
    to: dict[int, list[str]] = {}
    for r in archive.catalog.query(
        "SELECT message, address, name FROM addresses WHERE kind = 'to' "
        "AND message IN (SELECT value FROM json_each(?)) ORDER BY rowid",
        (arg,),
    ):
        to.setdefault(r["message"], []).append(r["name"] or r["address"])
    dirs: dict[int, list[str]] = {}
    for r in archive.catalog.query(
        "SELECT message, direction FROM reports WHERE message IN (SELECT value FROM json_each(?)) "
        "ORDER BY id",
        (arg,),
    ):
        if r["direction"]:
            dirs.setdefault(r["message"], []).append(r["direction"])
    return {k: ", ".join(v[:3]) + (" …" if len(v) > 3 else "") for k, v in to.items()}, dirs


def _rows(archive: Archive, hits: list[Hit], zone: str, dirs=None) -> list[Row]:  # type: ignore[no-untyped-def]
    to, found_dirs = _extras(archive, [h.id for h in hits])
    dirs = dirs or found_dirs
    return [
        Row(
            h.id,
            h.date,
            time_html(h.date, zone),
            h.sender,
            to.get(h.id, ""),
            h.subject,
            human_size(h.size),
            h.has_attachment,
            (dirs.get(h.id) or [""])[0],
        )
        for h in hits
    ]


def search(
    archive: Archive,
    query: str,
    user: str | None,
    direction: str,
    page: int,
    zone: str,
) -> tuple[list[Row], int, bool]:
    """One page of results: rows, total (matches), whether the total is a lower bound."""
    offset = (page - 1) * PAGE_SIZE
    if direction not in DIRECTIONS:
        hits, total = archive.search_page(query, user=user, limit=PAGE_SIZE, offset=offset)
        return _rows(archive, hits, zone), total, False
    kept: list[Hit] = []
    matched = 0
    scanned = 0
    capped = False
    for chunk in _chunks(archive.iter_matches(query, user=user), 500):
        _to, dirs = _extras(archive, [h.id for h in chunk])
        for h in chunk:
            if direction in dirs.get(h.id, []):
                if offset <= matched < offset + PAGE_SIZE:
                    kept.append(h)
                matched += 1
        scanned += len(chunk)
        if scanned >= MAX_DIRECTION_SCAN:
            capped = True
            break
    return _rows(archive, kept, zone, {h.id: [direction] for h in kept}), matched, capped


def _chunks(it: Iterator[Hit], n: int) -> Iterator[list[Hit]]:
    batch: list[Hit] = []
    for h in it:
        batch.append(h)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


# --- one message -----------------------------------------------------------------------


def _reopen(archive: Archive, message_id: int, stream: BinaryIO) -> BinaryIO:
    if hasattr(stream, "seek") and isinstance(stream, blobs._Whole):
        stream.seek(0)
        return stream
    stream.close()
    return blobs.open_blob(archive, message_id)


def structure(archive: Archive, message_id: int) -> Structure:
    with blobs.open_blob(archive, message_id) as s:
        return scan(s)


def attachment_name(part: Part) -> str:
    if part.filename:
        return part.filename
    ext = {"message/rfc822": ".eml", "text/html": ".html", "text/plain": ".txt"}.get(
        part.content_type, ".bin"
    )
    return f"part-{part.index}{ext}"


def message_view(archive: Archive, message_id: int, zone: str, with_provenance: bool) -> dict:
    info = archive.get_message(message_id)
    stream = blobs.open_blob(archive, message_id)
    try:
        st = scan(stream)
        text = html = ""
        plain = st.text_parts("plain")
        htmls = st.text_parts("html")
        if plain:
            stream = _reopen(archive, message_id, stream)
            text = text_of(stream, plain[0])
        if htmls:
            stream = _reopen(archive, message_id, stream)
            html = "present"
    finally:
        stream.close()
    addrs = info["addresses"]
    date_iso = info["date"] or (info["received_at"] or "")[:19] + "Z"
    view: dict[str, Any] = {
        "id": message_id,
        "subject": header_text(st.headers, "subject") or info["subject"] or "",
        "from": header_text(st.headers, "from") or _addr_list(addrs.get("from", [])),
        "to": header_text(st.headers, "to") or _addr_list(addrs.get("to", [])),
        "cc": header_text(st.headers, "cc"),
        "date_html": time_html(date_iso, zone),
        "size": human_size(info["size"]),
        "text": text,
        "html": bool(html),
        "attachments": [
            {
                "index": p.index,
                "name": attachment_name(p),
                "type": p.content_type,
                "size": human_size(p.size * 3 // 4 if p.encoding == "base64" else p.size),
            }
            for p in st.attachments()
        ],
        "sha256": info["sha256"],
    }
    provenance = info["reports"] if with_provenance else []
    return {"m": view, "provenance": provenance, "owners": info["owners"]}


def html_body(archive: Archive, message_id: int) -> str:
    """The sanitised HTML of the message's first HTML body part ("" when there is none)."""
    with blobs.open_blob(archive, message_id) as s:
        st = scan(s)
    htmls = st.text_parts("html")
    if not htmls:
        return ""
    with blobs.open_blob(archive, message_id) as s:
        return clean_html(text_of(s, htmls[0]))


def raw_text(archive: Archive, message_id: int, limit: int = 2 * 1024 * 1024) -> str:
    with blobs.open_blob(archive, message_id) as s:
        data = s.read(limit)
        more = bool(s.read(1))
    text = data.decode("utf-8", "replace")
    return text + ("\n[…]" if more else "")


def find_part(archive: Archive, message_id: int, index: int) -> Part | None:
    for p in structure(archive, message_id).attachments():
        if p.index == index:
            return p
    return None


# --- admin -----------------------------------------------------------------------------


def audit_rows(
    archive: Archive, actor: str = "", action: str = "", limit: int = 200
) -> list[dict[str, Any]]:
    sql = "SELECT at, actor, action, detail FROM audit WHERE 1"
    params: list[Any] = []
    if actor:
        sql += " AND actor LIKE ?"
        params.append(f"%{actor}%")
    if action:
        sql += " AND action LIKE ?"
        params.append(f"%{action}%")
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [dict(r) for r in archive.catalog.query(sql, params)]
