"""Archive maintenance: verify, compact, index rebuild, stores (list, seal).

Theory of operation. The catalog is the commit point (catalog.py); maintenance never
changes what a committed row means, it only moves or re-checks it.

- `verify` recomputes every blob's SHA-256 and the hash chain (`Archive.verify`), and
  checks that catalog, packs and index agree: the catalog row describes its blob (size,
  subject, sender, Message-ID, date, attachments, header addresses, re-parsed from the
  bytes), the pack's record table names the same blob at the same place, and the search
  index holds a document for every message. Findings are per message id.
- `compact` rewrites the live (unsealed) packs into full ~1 MiB chunks, dropping bytes
  no row points at. Crash-safe by ordering: (1) new packs are written and fsync'd in
  `compact.tmp/` (no lock; ingest keeps running); (2) under the write lock they are
  renamed into `packs/` with fresh numbers and (3) one catalog transaction repoints the
  rows; (4) packs no row points at any more are deleted. A kill before (3) leaves the old
  rows pointing at the old, untouched packs (the new files are cut back by the next
  `PackWriter` and removed by the next compact); a kill after (3) leaves only unreferenced
  old packs. Either way the store verifies.
- A *store* is a run of pack numbers (`stores` table; first pack in `meta` as
  `store.<id>.first_pack`). `seal` ends the current store: its packs become read-only
  (mode 0444) and are never appended to or compacted again; an empty pack opens the next
  store, where new mail goes. There is one catalog and one index, so search spans all.

`maintenance.lock`: compact, seal and index rebuild hold it exclusively, verify and backup
shared (so no pack is deleted under them). The archive write lock (ingest's) is taken only
for the short steps that need it: compact's rename + commit, seal, and index rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import mime
from .catalog import now_iso
from .durable import fsync_dir, write_file
from .ingest import _epoch, header_addresses
from .packs import (
    CHUNK_BYTES,
    ENTRY,
    FILE_MAGIC,
    RECORD_HEADER,
    RECORD_MAGIC,
    BlobRef,
    PackError,
    PackReader,
    PackWriter,
    pack_name,
)
from .store import Archive, ArchiveBusy, ArchiveError, Progress, VerifyResult

#: How long a maintenance step waits for the service's ingest to let go of the write lock.
WRITE_LOCK_WAIT = 30.0
SEALED_MODE = 0o444

#: Test hook: called with "written", "renamed", "committed", "deleted" during compact.
crash_hook: Callable[[str], None] | None = None


def _crashpoint(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


@contextlib.contextmanager
def maintenance_lock(archive: Archive, *, shared: bool = False) -> Iterator[None]:
    """compact, seal and index rebuild run alone (exclusive); verify and backup, which
    only read but must not see packs vanish under them, may run together (shared)."""
    fd = os.open(archive.root / "maintenance.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveBusy(
                "another maintenance command (verify, compact, seal, backup, index rebuild) "
                "is running"
            ) from None
        yield
    finally:
        os.close(fd)


def audit(archive: Archive, action: str, detail: dict[str, Any]) -> None:
    archive.catalog.audit(action, detail)


# --- stores ----------------------------------------------------------------------------


@dataclass
class StoreInfo:
    id: int
    name: str
    sealed: bool
    created_at: str
    first_pack: int
    packs: list[int] = field(default_factory=list)
    messages: int = 0
    bytes: int = 0  # raw message bytes
    pack_bytes: int = 0  # on disk
    current: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_stores(archive: Archive) -> list[StoreInfo]:
    """Every store, oldest first, with its packs and message counts."""
    cat = archive.catalog
    firsts = {
        r["key"]: int(r["value"])
        for r in cat.query("SELECT key, value FROM meta WHERE key LIKE 'store.%.first_pack'")
    }
    stores = [
        StoreInfo(
            r["id"],
            r["name"],
            bool(r["sealed"]),
            r["created_at"] or "",
            firsts.get(f"store.{r['id']}.first_pack", 1),
        )
        for r in cat.query("SELECT * FROM stores ORDER BY id")
    ]
    if not stores:
        return stores
    stores[-1].current = not stores[-1].sealed

    def owner(pack: int) -> StoreInfo:
        found = stores[0]
        for s in stores:
            if pack >= s.first_pack:
                found = s
        return found

    for n in archive.packs.numbers():
        s = owner(n)
        s.packs.append(n)
        s.pack_bytes += (archive.packs.dir / pack_name(n)).stat().st_size
    for r in cat.query(
        "SELECT pack, COUNT(*) AS n, SUM(size) AS b FROM messages GROUP BY pack ORDER BY pack"
    ):
        s = owner(r["pack"])
        s.messages += r["n"]
        s.bytes += r["b"] or 0
    return stores


def store_packs(archive: Archive, store_id: int) -> set[int]:
    """The pack numbers of one store (also those rows name but that are missing)."""
    stores = list_stores(archive)
    for s in stores:
        if s.id == store_id:
            used = {r["pack"] for r in archive.catalog.query("SELECT DISTINCT pack FROM messages")}
            return set(s.packs) | {n for n in used if _in_store(n, s, stores)}
    raise ArchiveError(f"no store {store_id} (see `proxy-admin store list`)")


def _in_store(pack: int, store: StoreInfo, stores: list[StoreInfo]) -> bool:
    later = [s.first_pack for s in stores if s.first_pack > store.first_pack]
    return pack >= store.first_pack and (not later or pack < min(later))


def sealed_packs(archive: Archive) -> set[int]:
    return {n for s in list_stores(archive) if s.sealed for n in s.packs}


def seal(archive: Archive) -> tuple[StoreInfo, StoreInfo]:
    """Seal the current store (read-only from now on); new mail goes to a new store."""
    with maintenance_lock(archive), archive.writing(WRITE_LOCK_WAIT):
        stores = list_stores(archive)
        current = stores[-1]
        if current.sealed:  # pragma: no cover - seal always opens a successor
            raise ArchiveError(f"store {current.id} is already sealed")
        if not current.messages:
            raise ArchiveError(f"store {current.id} ({current.name}) is empty; nothing to seal")
        cat = archive.catalog
        ends = cat.pack_ends()
        for n in current.packs:  # cut crash left-overs before the files become read-only
            path = archive.packs.dir / pack_name(n)
            end = ends.get(n, len(FILE_MAGIC))
            if path.stat().st_size > end:
                os.truncate(path, end)
        first = max(archive.packs.numbers(), default=0) + 1
        # the next store's (empty) pack exists first: ingest appends to the newest pack
        write_file(archive.packs.dir / pack_name(first), FILE_MAGIC)
        fsync_dir(archive.packs.dir)
        now = now_iso()
        with cat.transaction() as conn:
            conn.execute("UPDATE stores SET sealed = 1 WHERE id = ?", (current.id,))
            cur = conn.execute(
                "INSERT INTO stores(name, path, created_at, sealed) VALUES (?, 'packs', ?, 0)",
                (f"store-{current.id + 1}", now),
            )
            new_id = cur.lastrowid
            conn.execute("UPDATE stores SET name = ? WHERE id = ?", (f"store-{new_id}", new_id))
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                (f"store.{new_id}.first_pack", str(first)),
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                (f"store.{current.id}.sealed_at", now),
            )
        apply_seal_modes(archive)
    audit(archive, "store seal", {"store": current.id, "next_store": new_id})
    after = {s.id: s for s in list_stores(archive)}
    return after[current.id], after[new_id]  # type: ignore[index]


def apply_seal_modes(archive: Archive) -> None:
    """Make the packs of sealed stores read-only (after seal, restore)."""
    for n in sealed_packs(archive):
        os.chmod(archive.packs.dir / pack_name(n), SEALED_MODE)


# --- verify ----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    store: int | None
    messages: int
    blobs_ok: int
    damaged: dict[int, list[str]]
    unreferenced_blobs: int = 0
    index_orphans: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "store": self.store,
            "messages": self.messages,
            "blobs_ok": self.blobs_ok,
            "damaged": [{"id": i, "problems": p} for i, p in sorted(self.damaged.items())],
            "unreferenced_blobs": self.unreferenced_blobs,
            "index_orphans": self.index_orphans,
            "notes": self.notes,
        }


def _row_check(archive: Archive) -> Callable[[Any, bytes], list[str]]:
    """Compare a catalog row with what ingest derives from its blob's bytes."""

    def check(row: Any, raw: bytes) -> list[str]:
        out = []
        p = mime.parse(raw)
        sender = p.from_[0] if p.from_ else ("", "")
        expect = {
            "size": len(raw),
            "subject": p.subject or "",
            "sender": ((f"{sender[0]} <{sender[1]}>" if sender[0] else sender[1]) or sender[0])
            or "",
            "message_id": p.message_id or "",
            "has_attachment": int(p.has_attachment),
        }
        for col, want in expect.items():
            have = row[col] if row[col] is not None else ("" if isinstance(want, str) else 0)
            if have != want:
                out.append(f"catalog {col} does not match the archived message")
        date = p.date or _epoch(row["received_at"]) or 0
        if row["date"] != date:
            out.append("catalog date does not match the archived message")
        try:
            attachments = json.loads(row["attachments"] or "[]")
        except ValueError:
            attachments = None
        if attachments != list(p.attachments):
            out.append("catalog attachments do not match the archived message")
        have_addrs = {
            (r["kind"], r["address"], r["name"])
            for r in archive.catalog.query(
                "SELECT kind, address, name FROM addresses "
                "WHERE message = ? AND kind IN ('from', 'to', 'cc', 'bcc')",
                (row["id"],),
            )
        }
        if have_addrs != set(header_addresses(p)):
            out.append("catalog addresses do not match the archived message")
        return out

    return check


def _pack_tables(
    archive: Archive, packs: set[int], notes: list[str]
) -> dict[tuple[int, int, int], tuple[str, int]]:
    """(pack, record offset, inner) -> (sha256, size) from the packs' own record tables."""
    out: dict[tuple[int, int, int], tuple[str, int]] = {}
    for n in sorted(packs):
        try:
            for ref, sha in archive.packs.scan(n):
                out[(n, ref.offset, ref.inner)] = (sha, ref.size)
        except (OSError, PackError) as e:
            notes.append(f"{pack_name(n)}: cannot scan: {getattr(e, 'strerror', None) or e}")
    return out


def verify(
    archive: Archive, store: int | None = None, progress: Progress | None = None
) -> VerifyReport:
    """Everything `Archive.verify` checks, plus catalog <-> packs <-> index agreement."""
    with maintenance_lock(archive, shared=True):
        report = _verify(archive, store, progress)
    audit(
        archive,
        "verify",
        {"store": store, "messages": report.messages, "damaged": sorted(report.damaged)},
    )
    return report


def _verify(archive: Archive, store: int | None, progress: Progress | None) -> VerifyReport:
    packs = store_packs(archive, store) if store is not None else None
    res: VerifyResult = archive.verify(packs=packs, check=_row_check(archive), progress=progress)
    report = VerifyReport(store, res.messages, res.blobs_ok, res.damaged)
    # rows first, then pack tables and index: ingest commits packs and index before the
    # catalog, so anything a row points at is already there
    rows = archive.catalog.query(
        "SELECT id, sha256, size, pack, offset, inner FROM messages ORDER BY id"
    )
    if packs is not None:
        rows = [r for r in rows if r["pack"] in packs]
    scanned = packs if packs is not None else set(archive.packs.numbers())
    tables = _pack_tables(archive, scanned | {r["pack"] for r in rows}, report.notes)
    referenced = set()
    for r in rows:
        key = (r["pack"], r["offset"], r["inner"])
        referenced.add(key)
        if tables.get(key) != (r["sha256"], r["size"]):
            res.add(r["id"], "catalog location does not match the pack's record table")
    live = {k for k in tables if k[0] in scanned}
    report.unreferenced_blobs = len(live - referenced)
    if report.unreferenced_blobs:
        report.notes.append(
            f"{report.unreferenced_blobs} blob(s) in packs belong to no message "
            "(left-overs; `proxy-admin compact` removes them)"
        )
    archive.index.index.reload()
    indexed = archive.index.all_shas()
    for r in rows:
        if r["sha256"] not in indexed:
            res.add(r["id"], "not in the search index (`proxy-admin index rebuild`)")
    if store is None:
        catalogued = {r["sha256"] for r in rows}
        report.index_orphans = len(indexed - catalogued)
        if report.index_orphans:
            report.notes.append(
                f"{report.index_orphans} index document(s) without a catalog row "
                "(an interrupted ingest; the next ingest or an index rebuild fixes it)"
            )
    return report


# --- index rebuild ---------------------------------------------------------------------


def rebuild_index(archive: Archive, progress: Progress | None = None) -> int:
    with maintenance_lock(archive):
        n = archive.rebuild_index(progress)
    audit(archive, "index rebuild", {"messages": n})
    return n


# --- compact ---------------------------------------------------------------------------


@dataclass
class CompactResult:
    messages: int = 0  # rows moved into new packs
    packs_before: int = 0
    packs_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    removed_packs: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pack_size(archive: Archive, n: int) -> int:
    try:
        return (archive.packs.dir / pack_name(n)).stat().st_size
    except FileNotFoundError:
        return 0


def _remove_unreferenced(archive: Archive, keep: set[int]) -> list[int]:
    """Delete live packs no row points at (never the newest: ingest appends there)."""
    numbers = archive.packs.numbers()
    used = {r["pack"] for r in archive.catalog.query("SELECT DISTINCT pack FROM messages")}
    gone = [n for n in numbers[:-1] if n not in used and n not in keep]
    for n in gone:
        os.unlink(archive.packs.dir / pack_name(n))
    if gone:
        fsync_dir(archive.packs.dir)
    return gone


def compact(archive: Archive, progress: Progress | None = None) -> CompactResult:
    """Rewrite the unsealed packs into full chunks; see the module docstring."""
    result = CompactResult()
    tmp = archive.root / "compact.tmp"
    with maintenance_lock(archive):
        shutil.rmtree(tmp, ignore_errors=True)
        sealed = sealed_packs(archive)
        live = [n for n in archive.packs.numbers() if n not in sealed]
        result.packs_before = len(live)
        result.bytes_before = sum(_pack_size(archive, n) for n in live)
        rows = [
            r
            for r in archive.catalog.query(
                "SELECT id, sha256, size, pack, offset, length, inner FROM messages ORDER BY id"
            )
            if r["pack"] not in sealed
        ]
        if rows and _worth_compacting(archive, rows, live):
            tmp.mkdir()
            try:
                moved = _copy_rows(archive, rows, tmp, progress)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _crashpoint("written")
            with archive.writing(WRITE_LOCK_WAIT):
                _install(archive, rows, moved, tmp)
                result.removed_packs = _remove_unreferenced(archive, sealed)
            _crashpoint("deleted")
            result.messages = len(rows)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with archive.writing(WRITE_LOCK_WAIT):
                result.removed_packs = _remove_unreferenced(archive, sealed)
        live = [n for n in archive.packs.numbers() if n not in sealed]
        result.packs_after = len(live)
        result.bytes_after = sum(_pack_size(archive, n) for n in live)
    audit(archive, "compact", result.as_dict())
    return result


def _worth_compacting(archive: Archive, rows: list[Any], live: list[int]) -> bool:
    """Unreferenced bytes, or more chunks than full ones would need."""
    records = {(r["pack"], r["offset"]): r["length"] for r in rows}
    waste = sum(_pack_size(archive, n) - len(FILE_MAGIC) for n in live) - sum(records.values())
    needed = -(-sum(r["size"] for r in rows) // CHUNK_BYTES)
    return waste > 0 or len(records) > needed + len(live)


def _copy_rows(
    archive: Archive, rows: list[Any], tmp: Path, progress: Progress | None
) -> list[BlobRef]:
    """Copy every row's blob (hash-checked) into new packs under `tmp`; no lock held."""
    writer = PackWriter(tmp, {})
    refs = []
    reader = PackReader(archive.packs.dir)
    try:
        for i, r in enumerate(rows, 1):
            ref = BlobRef(r["pack"], r["offset"], r["length"], r["inner"], r["size"])
            try:
                raw = reader.read(ref, r["sha256"])
            except PackError as e:
                raise ArchiveError(
                    f"message {r['id']} is damaged ({e}); compact stopped, nothing changed "
                    "(see `proxy-admin verify`)"
                ) from None
            refs.append(writer.append(raw, r["sha256"]))
            if progress is not None and (i % 200 == 0 or i == len(rows)):
                progress(i, len(rows))
    finally:
        writer.close()
    check = PackReader(tmp)
    for r, ref in zip(rows, refs, strict=True):
        check.read(ref, r["sha256"])  # read back before anything points at it
    fsync_dir(tmp)
    return refs


def _install(archive: Archive, rows: list[Any], refs: list[BlobRef], tmp: Path) -> None:
    """Under the write lock: new packs get fresh numbers, then one commit repoints rows."""
    base = max(archive.packs.numbers(), default=0)
    for n in PackReader(tmp).numbers():
        os.rename(tmp / pack_name(n), archive.packs.dir / pack_name(base + n))
    fsync_dir(archive.packs.dir)
    _crashpoint("renamed")
    with archive.catalog.transaction() as conn:
        for r, ref in zip(rows, refs, strict=True):
            cur = conn.execute(
                "UPDATE messages SET pack = ?, offset = ?, length = ?, inner = ? "
                "WHERE id = ? AND pack = ? AND offset = ? AND inner = ?",
                (base + ref.pack, ref.offset, ref.length, ref.inner)
                + (r["id"], r["pack"], r["offset"], r["inner"]),
            )
            if cur.rowcount != 1:
                raise ArchiveError(f"message {r['id']} moved during compact; nothing changed")
    _crashpoint("committed")


def record_count(archive: Archive, pack: int) -> int:
    """How many records (chunks) a pack holds (tests, `store list` diagnostics)."""
    path = archive.packs.dir / pack_name(pack)
    count = 0
    with open(path, "rb") as f:
        f.seek(len(FILE_MAGIC))
        while True:
            head = f.read(RECORD_HEADER.size)
            if len(head) < RECORD_HEADER.size:
                return count
            magic, n, _raw, comp = RECORD_HEADER.unpack(head)
            if magic != RECORD_MAGIC:
                return count
            f.seek(n * ENTRY.size + comp, os.SEEK_CUR)
            count += 1
