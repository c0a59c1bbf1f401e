"""`Archive`: the archive store of one state dir, the library object the CLI and service use.

`state_dir/archive/` holds `catalog.sqlite`, `packs/` and `index/`. Reading (search, show,
export) needs no lock. Writing packs and the index (ingest, import, index rebuild) takes
an exclusive `flock` on `write.lock`, so the service's background ingest and a one-shot
`proxy-admin ingest` never interleave; the loser gets `ArchiveBusy`. Small catalog-only
changes (users, audit) are plain SQLite transactions (WAL, busy timeout).

One `Archive` may be shared by threads (the service calls it via `trio.to_thread`): writes
are serialised by an internal lock, the SQLite connection by the catalog's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archive.timefmt import utc_iso

from .catalog import GENESIS, Catalog, chain_link
from .errors import ArchiveError
from .index import IndexSchemaError, MessageIndex
from .packs import BlobRef, PackError, PackReader, PackWriter
from .query import parse_query

if TYPE_CHECKING:
    from .reports import IngestStats, Item, ReportRef

# Writing (archive.ingest: the MIME parser and the `email` package; archive.importer:
# `mailbox`; archive.reports) is imported by the methods that write, so that reading --
# `proxy-admin search`, `show` -- loads only the catalog, index and packs (issue 12 item 4).

Progress = Callable[[int, int], None]
#: Rescan the report directory at least this often even when its mtime did not move.
FULL_SCAN_INTERVAL = 30.0


class ArchiveBusy(ArchiveError):
    """Another process holds the archive write lock."""


@dataclass(frozen=True, slots=True)
class Hit:
    id: int
    sha256: str
    date: str  # ISO 8601 UTC
    sender: str
    subject: str
    size: int
    has_attachment: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "date": self.date,
            "from": self.sender,
            "subject": self.subject,
            "size": self.size,
            "has_attachment": self.has_attachment,
        }


@dataclass
class VerifyResult:
    messages: int = 0
    blobs_ok: int = 0
    problems: list[str] = field(default_factory=list)
    #: message id -> what is wrong with it (the same findings as `problems`, by id)
    damaged: dict[int, list[str]] = field(default_factory=dict)

    def add(self, message: int, problem: str) -> None:
        self.problems.append(f"message {message}: {problem}")
        self.damaged.setdefault(message, []).append(problem)


#: `Archive.verify(check=...)`: extra findings for one catalog row and its blob's bytes.
RowCheck = Callable[[Any, bytes], list[str]]


def _ref(row: Any) -> BlobRef:
    return BlobRef(row["pack"], row["offset"], row["length"], row["inner"], row["size"])


def iso_utc(epoch: int | None) -> str:
    if not epoch:
        return ""
    try:
        return utc_iso(epoch)
    except (OverflowError, OSError, ValueError):
        return ""


class Archive:
    """The archive store; `reset_index=True` sets an incompatible index aside (as
    `index.old-<time>`) and starts an empty one, to be filled by `rebuild_index()`."""

    def __init__(self, state_dir: Path, *, reset_index: bool = False) -> None:
        self.root = Path(state_dir) / "archive"
        (self.root / "packs").mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.root / "catalog.sqlite")
        try:
            self.index = MessageIndex(self.root / "index")
        except IndexSchemaError as e:
            if not reset_index:
                self.catalog.close()
                raise ArchiveError(str(e)) from None
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            os.rename(self.root / "index", self.root / f"index.old-{stamp}")
            self.index = MessageIndex(self.root / "index")
        self.packs = PackReader(self.root / "packs")
        self._write_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._pack_writer: PackWriter | None = None
        self._known: dict[str, tuple[int, int]] | None = None
        self._pending_stems: set[str] = set()
        self._last_full_scan: dict[Path, float] = {}
        self._data_version: int | None = None
        self._failed: dict[str, tuple[int, int]] = {}
        self._dir_mtime: dict[Path, tuple[int, float]] = {}

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        with self._write_lock:
            self._release()
            self.catalog.close()

    def close_quietly(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _acquire(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.root / "write.lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArchiveBusy(
                "the archive is being written by another process (the service's ingest?)"
            ) from None
        self._lock_fd = fd

    def _release(self) -> None:
        if self._pack_writer is not None:
            self._pack_writer.close()
            self._pack_writer = None
        self.index.end()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the write lock for a short maintenance step (ArchiveBusy if another
        process keeps it for longer than `wait` seconds)."""
        deadline = time.monotonic() + wait
        with self._write_lock:
            while True:
                try:
                    self._acquire()
                    break
                except ArchiveBusy:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
            try:
                yield
            finally:
                self._release()

    def pack_writer(self) -> PackWriter:
        assert self._lock_fd is not None
        if self._pack_writer is None:
            self._pack_writer = PackWriter(self.root / "packs", self.catalog.pack_ends())
        return self._pack_writer

    # --- ingest ----------------------------------------------------------------------

    def _known_reports(self) -> dict[str, tuple[int, int]]:
        version = self.catalog.one("PRAGMA data_version")[0]  # type: ignore[index]
        if self._known is None or version != self._data_version:
            self._known, self._pending_stems = self.catalog.report_states()
            self._data_version = version
        return self._known

    @staticmethod
    def _dir_mtime_ns(reports_dir: Path) -> int | None:
        try:
            return reports_dir.stat().st_mtime_ns
        except OSError:
            return None

    def ingest_pending(
        self,
        reports_dir: Path,
        *,
        progress: Progress | None = None,
        max_items: int | None = None,
    ) -> IngestStats:
        """Ingest every committed report pair not yet (or not as-is) in the archive."""
        from .reports import IngestStats, scan

        with self._write_lock:
            stats = IngestStats()
            # Renames into the directory move its mtime: an unchanged directory has
            # nothing new, and the service's 0.5 s poll stays cheap with many reports.
            mtime = self._dir_mtime_ns(reports_dir)
            remembered = self._dir_mtime.get(reports_dir)
            if mtime is not None and remembered is not None and remembered[0] == mtime:
                if time.monotonic() - remembered[1] < FULL_SCAN_INTERVAL:
                    return stats
            known = self._known_reports()
            now = time.monotonic()
            full = now - self._last_full_scan.get(reports_dir, -1e9) >= FULL_SCAN_INTERVAL
            if full:
                self._last_full_scan[reports_dir] = now
            watch = None if full else self._pending_stems
            refs = [
                r for r in scan(reports_dir, known, watch) if self._failed.get(r.stem) != r.state
            ]
            if not refs:
                self._release()
                self._remember_dir(reports_dir, mtime)
                return stats
            if max_items is not None and len(refs) > max_items:
                stats.pending = len(refs) - max_items
                refs = refs[:max_items]
            self._acquire()
            try:
                self._run(self._report_items(refs, stats), len(refs), stats, progress)
            except BaseException:
                self._release()
                raise
            if not stats.pending:
                self._release()
                self._remember_dir(reports_dir, mtime)
            return stats

    def sweep_reports(self, reports_dir: Path, retention: float) -> int:
        """Remove archived report pairs older than `retention` (archive.retention)."""
        from .retention import sweep

        with self._write_lock:
            known = self._known_reports()
            return sweep(reports_dir, known, set(self._pending_stems), retention)

    def _remember_dir(self, reports_dir: Path, mtime: int | None) -> None:
        # a rename within the file system's timestamp granularity may not move mtime,
        # so only trust a directory mtime that is safely in the past
        if mtime is not None and time.time_ns() - mtime > 2_000_000_000:
            self._dir_mtime[reports_dir] = (mtime, time.monotonic())

    def _report_items(self, refs: list[ReportRef], stats: IngestStats) -> Iterator[Item]:
        from .reports import Item, ReportError, read_report

        for ref in refs:
            try:
                prov, state = read_report(ref)
                with open(ref.eml, "rb") as f:
                    raw = f.read()
            except ReportError as e:
                self._failed[ref.stem] = ref.state
                stats.errors.append(str(e))
                continue
            except OSError as e:
                self._failed[ref.stem] = ref.state
                stats.errors.append(f"{ref.eml.name}: cannot read: {e.strerror}")
                continue
            yield Item(prov, raw)

    def _run(
        self, items: Iterable[Item], total: int, stats: IngestStats, progress: Progress | None
    ) -> None:
        from . import ingest as _ingest  # BATCH_* read at call time (tests lower them)

        batch: list[Item] = []
        size = 0
        done = 0

        def flush() -> None:
            nonlocal batch, size, done
            if batch:
                result = _ingest.ingest_batch(self.catalog, self.index, self.pack_writer(), batch)
                stats.add(result)
                if self._known is not None:
                    for it in batch:
                        stem = it.prov.row.get("stem")
                        if stem:
                            stats.ingested.append((stem, it.prov.row.get("outcome") or ""))
                            self._known[stem] = (
                                it.prov.row["mpr_mtime_ns"],
                                it.prov.row["mpr_size"],
                            )
                            if it.prov.row.get("outcome") == "pending":
                                self._pending_stems.add(stem)
                            else:
                                self._pending_stems.discard(stem)
                    self._data_version = self.catalog.one("PRAGMA data_version")[0]  # type: ignore[index]
                done += len(batch)
                batch, size = [], 0
                if progress is not None:
                    progress(done, total)

        for it in items:
            batch.append(it)
            size += len(it.raw)
            if len(batch) >= _ingest.BATCH_ITEMS or size >= _ingest.BATCH_BYTES:
                flush()
        flush()

    def ingest_items(
        self, items: Iterable[Item], *, total: int = 0, progress: Progress | None = None
    ) -> IngestStats:
        """Ingest imported messages (see importer.py)."""
        from .reports import IngestStats

        with self._write_lock:
            stats = IngestStats()
            self._acquire()
            try:
                self._run(items, total, stats, progress)
            finally:
                self._release()
            return stats

    def import_path(self, path: Path, *, progress: Progress | None = None) -> IngestStats:
        """Import a report dir, Maildir, `.eml` tree, mbox or single `.eml` (importer.py)."""
        from .importer import detect, items

        src = detect(Path(path))
        if src.kind == "reports":
            return self.ingest_pending(src.path, progress=progress)
        stats = self.ingest_items(items(src), total=max(src.count, 0), progress=progress)
        self.catalog.audit("import", {"path": str(src.path), "kind": src.kind, **stats.as_dict()})
        return stats

    def document_for(self, message: int, raw: bytes, extra_keys: Iterable[str] = ()):
        """The index document of a catalogued message (re-index, rebuild)."""
        from .ingest import document_for

        return document_for(self.catalog, message, raw, extra_keys)

    # --- reading ---------------------------------------------------------------------

    def _row(self, message_id: int | str):
        if isinstance(message_id, str) and not message_id.isdigit():
            row = self.catalog.one("SELECT * FROM messages WHERE sha256 = ?", (message_id,))
        else:
            row = self.catalog.one("SELECT * FROM messages WHERE id = ?", (int(message_id),))
        if row is None:
            raise ArchiveError(f"no archived message {message_id}")
        return row

    def get_raw(self, message_id: int | str) -> bytes:
        """The exact original bytes (SHA-256 checked on the way out)."""
        row = self._row(message_id)
        try:
            return self.packs.read(_ref(row), row["sha256"])
        except PackError as e:
            raise ArchiveError(f"message {row['id']}: {e}") from None

    def get_message(self, message_id: int | str) -> dict[str, Any]:
        row = self._row(message_id)
        mid = row["id"]
        addrs: dict[str, list[str]] = {}
        for r in self.catalog.query(
            "SELECT kind, address, name FROM addresses WHERE message = ? ORDER BY rowid", (mid,)
        ):
            text = f"{r['name']} <{r['address']}>" if r["name"] else r["address"]
            addrs.setdefault(r["kind"], []).append(text)
        reports = [
            {
                k: (json.loads(r[k]) if k == "rcpt_to" and r[k] else r[k])
                for k in (
                    "uuid",
                    "protocol",
                    "direction",
                    "listener",
                    "received_at",
                    "client_ip",
                    "pop3_user",
                    "mail_from",
                    "rcpt_to",
                    "outcome",
                    "reply",
                    "source",
                    "mailbox",
                    "folder",
                )
            }
            for r in self.catalog.query(
                "SELECT * FROM reports WHERE message = ? ORDER BY id", (mid,)
            )
        ]
        owners = [
            r["name"]
            for r in self.catalog.query(
                "SELECT u.name FROM ownership o JOIN users u ON u.id = o.user "
                "WHERE o.message = ? ORDER BY u.name",
                (mid,),
            )
        ]
        return {
            "id": mid,
            "sha256": row["sha256"],
            "size": row["size"],
            "date": iso_utc(row["date"]),
            "received_at": row["received_at"],
            "message_id": row["message_id"],
            "subject": row["subject"],
            "from": row["sender"],
            "addresses": addrs,
            "has_attachment": bool(row["has_attachment"]),
            "attachments": json.loads(row["attachments"] or "[]"),
            "chain": row["chain"],
            "reports": reports,
            "owners": owners,
        }

    def _user_keys(self, user: str | None) -> set[str] | None:
        if user is None:
            return None
        keys = self.catalog.user_keys(user)
        if keys is None:
            raise ArchiveError(f"no user named {user!r} (see `proxy-admin user list`)")
        return keys

    def search(self, query: str, user: str | None = None, limit: int = 50) -> list[Hit]:
        """Matches of `query` (query.py syntax), newest first; only `user`'s mail if given."""
        hits, _total = self.search_page(query, user=user, limit=limit, count=False)
        return hits

    def search_page(
        self,
        query: str,
        user: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        count: bool = True,
    ) -> tuple[list[Hit], int]:
        """A page of matches and the number of all matches (-1 unless `count`)."""
        parsed = parse_query(query)
        keys = self._user_keys(user)
        self.index.index.reload()
        shas, total = self.index.search(parsed, keys, limit, offset, count=count)
        rows = self.catalog.find_messages(shas)
        by_id = {
            r["id"]: r
            for r in self.catalog.query(
                "SELECT id, sha256, date, sender, subject, size, has_attachment FROM messages "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(rows.values())),),
            )
        }
        hits = []
        for sha in shas:  # an index doc without catalog row (crash window) is not shown
            mid = rows.get(sha)
            if mid is None:
                continue
            r = by_id[mid]
            hits.append(
                Hit(
                    r["id"],
                    r["sha256"],
                    iso_utc(r["date"]),
                    r["sender"] or "",
                    r["subject"] or "",
                    r["size"],
                    bool(r["has_attachment"]),
                )
            )
        return hits, -1 if total is None else total

    def iter_matches(self, query: str, user: str | None = None, page: int = 500):
        """Every match, newest first (export)."""
        offset = 0
        while True:
            hits, total = self.search_page(query, user=user, limit=page, offset=offset)
            yield from hits
            offset += page
            if offset >= total or not hits:
                return

    def count(self) -> int:
        return self.catalog.one("SELECT COUNT(*) FROM messages")[0]  # type: ignore[index]

    # --- maintenance -----------------------------------------------------------------

    def verify(
        self,
        *,
        packs: Collection[int] | None = None,
        check: RowCheck | None = None,
        progress: Progress | None = None,
    ) -> VerifyResult:
        """Re-read every blob (hash check) and recompute the hash chain.

        The chain is always checked over every row; blobs are read only for rows in
        `packs` (all if None), and `check(row, raw)` may add findings per blob
        (archive/maintenance.py compares the catalog row with the blob)."""
        res = VerifyResult()
        prev = GENESIS
        rows = self.catalog.query("SELECT * FROM messages ORDER BY id")
        for i, row in enumerate(rows, 1):
            link = chain_link(prev, row["sha256"], row["report_hash"])
            if link != row["chain"]:
                res.add(row["id"], "hash chain broken")
            prev = row["chain"]
            if packs is not None and row["pack"] not in packs:
                continue
            res.messages += 1
            try:
                raw = self.packs.read(_ref(row), row["sha256"])
                res.blobs_ok += 1
            except PackError as e:
                res.add(row["id"], str(e))
            else:
                for problem in check(row, raw) if check is not None else ():
                    res.add(row["id"], problem)
            if progress is not None and (i % 200 == 0 or i == len(rows)):
                progress(i, len(rows))
        return res

    def rebuild_index(self, progress: Progress | None = None) -> int:
        """Recreate every index document from packs + catalog."""
        with self._write_lock:
            self._acquire()
            try:
                self.index.begin()
                self.index.clear()
                rows = self.catalog.query("SELECT id FROM messages ORDER BY id")
                for i, r in enumerate(rows, 1):
                    self.index.upsert(self.document_for(r["id"], self.get_raw(r["id"])))
                    if i % 1000 == 0:
                        self.index.commit()
                        if progress:
                            progress(i, len(rows))
                self.index.commit()
            finally:
                self._release()
            return len(rows)
