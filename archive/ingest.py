"""Ingest: report pairs (or imported files) -> pack blob + index document + catalog row.

Theory of operation. Work is done in batches, each in three commits in this order:
1. the new blobs are appended to the active pack and fsync'd;
2. the index documents are upserted (delete-by-sha, add) and the tantivy commit is done;
3. one catalog transaction inserts the message rows (extending the hash chain), their
   addresses, and the report rows, and records each report's `.mpr` (mtime, size):
   this is the "done" mark.
A crash before 3 leaves the report pending: the rerun cuts the uncommitted pack tail
(packs.py), rewrites the same index documents (upsert), and commits the catalog rows,
so nothing is lost or duplicated. A message seen before (same SHA-256) gets only a new
report row (provenance) and, if that report brings new owners, a refreshed index doc.

`ingest_loop` runs this from a Trio service: blocking work happens in a worker thread
via `trio.to_thread.run_sync`, a bounded batch per call so cancellation is prompt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import mime
from .catalog import chain_link, now_iso
from .index import IndexDoc
from .reports import IngestStats, Item, Provenance  # noqa: F401 - Item, IngestStats: API

if TYPE_CHECKING:
    from .catalog import Catalog
    from .index import MessageIndex
    from .packs import PackWriter

log = logging.getLogger("mailtee.archive")

#: Commit after this many reports or this many message bytes, whichever comes first.
BATCH_ITEMS = 1000
BATCH_BYTES = 64 * 1024 * 1024

#: Test hook: called with "packs", "index", "catalog" after each commit of a batch.
crash_hook: Callable[[str], None] | None = None


def _crashpoint(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


def _epoch(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _fmt(pairs: list[tuple[str, str]]) -> str:
    return " ".join(f"{n} {a}".strip() for n, a in pairs)


def envelope_addresses(prov: Provenance) -> list[tuple[str, str]]:
    """(kind, address) rows contributed by the SMTP envelope of one report."""
    out = []
    try:
        rcpts = json.loads(prov.row.get("rcpt_to") or "[]")
    except ValueError:
        rcpts = []
    for r in rcpts:
        addr = str(r).strip().strip("<>").lower()
        if addr:
            out.append(("rcpt", addr))
    mail_from = (prov.row.get("mail_from") or "").strip().strip("<>").lower()
    if mail_from:
        out.append(("mail_from", mail_from))
    return out


_QUOTED = re.compile(r"^[ \t]*>.*$\n?", re.M)


def split_quoted(body: str) -> dict[str, str]:
    """Own text and quoted reply lines, indexed differently (see index.UNPOSITIONED)."""
    if ">" not in body:
        return {"body": body, "quoted": ""}
    quoted = "\n".join(m.group().rstrip("\n") for m in _QUOTED.finditer(body))
    return {"body": _QUOTED.sub("", body), "quoted": quoted}


def build_doc(
    sha256: str,
    size: int,
    date: int,
    parsed: mime.ParsedMessage,
    envelope_rcpts: set[str],
    keys: set[str],
) -> IndexDoc:
    header_to_cc = {a for _, a in parsed.to + parsed.cc}
    bcc = [a for _, a in parsed.bcc] + sorted(envelope_rcpts - header_to_cc)
    return IndexDoc(
        sha256=sha256,
        date=date,
        size=size,
        fields={
            "from": _fmt(parsed.from_),
            "to": _fmt(parsed.to),
            "cc": _fmt(parsed.cc),
            "bcc": " ".join(dict.fromkeys(bcc)),
            "subject": parsed.subject,
            **split_quoted(parsed.body),
            "attachment": " ".join(parsed.attachments),
        },
        has_attachment=parsed.has_attachment,
        keys=frozenset(keys),
        addresses={
            "from": [a for _, a in parsed.from_ if a],
            "to": [a for _, a in parsed.to if a],
            "cc": [a for _, a in parsed.cc if a],
            "bcc": [a for a in bcc if a],
        },
    )


def header_addresses(parsed: mime.ParsedMessage) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for kind, pairs in (("from", parsed.from_), ("to", parsed.to), ("cc", parsed.cc)):
        rows.extend((kind, a, n) for n, a in pairs if a)
    rows.extend(("bcc", a, n) for n, a in parsed.bcc if a)
    return rows


@dataclass(slots=True)
class _New:
    sha256: str
    raw: bytes
    parsed: mime.ParsedMessage
    ref: object
    first: Provenance
    provs: list[Provenance]


def document_for(
    cat: Catalog, message: int, raw: bytes, extra_keys: Iterable[str] = ()
) -> IndexDoc:
    """The index document of a catalogued message (re-index, rebuild, a new owner)."""
    row = cat.one("SELECT sha256, size, date FROM messages WHERE id = ?", (message,))
    assert row is not None
    rcpts = {
        r["address"]
        for r in cat.query(
            "SELECT address FROM addresses WHERE message = ? AND kind = 'rcpt'", (message,)
        )
    }
    rcpts.update(k for k in extra_keys if not k.startswith("pop3:"))
    keys = cat.message_keys(message) | set(extra_keys)
    return build_doc(row["sha256"], row["size"], row["date"], mime.parse(raw), rcpts, keys)


def ingest_batch(
    cat: Catalog, index: MessageIndex, packs: PackWriter, items: list[Item]
) -> IngestStats:
    """Run one batch through the three commits. The caller holds the write lock."""
    stats = IngestStats()
    shas = [hashlib.sha256(it.raw).hexdigest() for it in items]
    existing = cat.find_messages(shas)
    new: dict[str, _New] = {}
    touched: dict[int, tuple[str, bytes, set[str]]] = {}  # existing id -> new keys
    for it, sha in zip(items, shas, strict=True):
        stats.bytes += len(it.raw)
        if sha in new:
            new[sha].provs.append(it.prov)
        elif sha in existing:
            mid = existing[sha]
            _sha, _raw, keys = touched.setdefault(mid, (sha, it.raw, set()))
            keys.update(it.prov.keys)
        else:
            parsed = mime.parse(it.raw)
            ref = packs.append(it.raw, sha)
            new[sha] = _New(sha, it.raw, parsed, ref, it.prov, [it.prov])
    packs.sync()
    _crashpoint("packs")

    docs: list[IndexDoc] = []
    for n in new.values():
        keys = {a for _, a, _n in header_addresses(n.parsed)}
        rcpts: set[str] = set()
        for prov in n.provs:
            keys.update(prov.keys)
            rcpts.update(a for kind, a in envelope_addresses(prov) if kind == "rcpt")
        date = n.parsed.date or _epoch(n.first.row.get("received_at")) or 0
        docs.append(build_doc(n.sha256, len(n.raw), date, n.parsed, rcpts, keys))
    for mid, (_sha, raw, extra) in touched.items():
        if extra - cat.message_keys(mid):  # a new owner: refresh the index keys
            docs.append(document_for(cat, mid, raw, extra_keys=extra))
    if docs:
        index.begin()
        for d in docs:
            index.upsert(d)
        index.commit()
    _crashpoint("index")

    now = now_iso()
    with cat.transaction() as conn:
        head = cat.chain_head(conn)
        ids: dict[str, int] = dict(existing)
        for n in new.values():
            head = chain_link(head, n.sha256, n.first.report_hash)
            p = n.parsed
            sender = p.from_[0] if p.from_ else ("", "")
            cur = conn.execute(
                "INSERT INTO messages(sha256, size, pack, offset, length, inner, date, "
                "received_at, message_id, subject, sender, has_attachment, attachments, "
                "report_hash, chain, store, ingested_at) "
                # the current store is the newest one (sealing starts a new one)
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                "COALESCE((SELECT MAX(id) FROM stores), 1),?)",
                (
                    n.sha256,
                    len(n.raw),
                    n.ref.pack,  # type: ignore[attr-defined]
                    n.ref.offset,  # type: ignore[attr-defined]
                    n.ref.length,  # type: ignore[attr-defined]
                    n.ref.inner,  # type: ignore[attr-defined]
                    p.date or _epoch(n.first.row.get("received_at")) or 0,
                    n.first.row.get("received_at"),
                    p.message_id,
                    p.subject,
                    (f"{sender[0]} <{sender[1]}>" if sender[0] else sender[1]) or sender[0],
                    int(p.has_attachment),
                    json.dumps(p.attachments, ensure_ascii=False),
                    n.first.report_hash,
                    head,
                    now,
                ),
            )
            ids[n.sha256] = cur.lastrowid  # type: ignore[assignment]
            conn.executemany(
                "INSERT OR IGNORE INTO addresses(message, kind, address, name) VALUES (?,?,?,?)",
                [(cur.lastrowid, k, a, nm) for k, a, nm in header_addresses(p)],
            )
            stats.new_messages += 1
        for it, sha in zip(items, shas, strict=True):
            mid = ids[sha]
            row = dict(it.prov.row)
            row["message"] = mid
            row["size_ok"] = int(
                (it.prov.expected_sha256 in (None, sha))
                and (it.prov.expected_size in (None, len(it.raw)))
            )
            if not row["size_ok"]:
                stats.errors.append(
                    f"{row.get('stem') or it.prov.uuid}: .eml does not match the size/sha256 "
                    "in its report (archived as found)"
                )
            conn.executemany(
                "INSERT OR IGNORE INTO addresses(message, kind, address, name) VALUES (?,?,?,'')",
                [(mid, k, a) for k, a in envelope_addresses(it.prov)],
            )
            old = conn.execute("SELECT id FROM reports WHERE uuid = ?", (it.prov.uuid,)).fetchone()
            row["updated_at"] = now
            if old is None:
                row["ingested_at"] = now
                cols = ", ".join(row)
                conn.execute(
                    f"INSERT INTO reports({cols}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()),
                )
                if sha in existing or new[sha].first is not it.prov:
                    stats.duplicates += 1
            else:
                sets = ", ".join(f"{c} = ?" for c in row)
                conn.execute(f"UPDATE reports SET {sets} WHERE id = ?", [*row.values(), old["id"]])
                stats.updated_reports += 1
            stats.reports += 1
        affected = sorted({ids[s] for s in shas})
        cat.refresh_ownership(conn, messages=affected)
    _crashpoint("catalog")
    return stats
