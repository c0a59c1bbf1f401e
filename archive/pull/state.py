"""What `pull` has already archived: per-folder high-water marks and per-message rows.

Theory of operation. `state_dir/pull/state.sqlite` holds, per mailbox and folder, the
UIDVALIDITY and the highest UID archived (`hwm`), and one `seen` row per archived
message: its reference (`<uidvalidity>:<uid>` for IMAP, the UIDL for POP3), SHA-256,
date and the report stem. A message is archived in three steps:

1. `begin()` records it as `inflight` with the stem of the report it will get;
2. the spool makes that report durable (archive/spool.py);
3. `finish()` marks it `done` (and moves the folder's `hwm` when the folder is complete).

So state never runs ahead of the durable copy. After a crash between 2 and 3,
`recover()` looks for the stem (in the report directory, or in the archive catalog once
ingested): found means durable, so the row becomes `done`; not found means the copy never
became durable and the row is dropped, so the message is fetched again. A rerun
therefore archives exactly the missing messages.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archive.sqltx import immediate, read_only_rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    mailbox TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER, hwm INTEGER NOT NULL,
    updated_at REAL, PRIMARY KEY (mailbox, folder));
CREATE TABLE IF NOT EXISTS seen (
    mailbox TEXT NOT NULL, folder TEXT NOT NULL, ref TEXT NOT NULL, sha256 TEXT,
    msg_date REAL, stem TEXT NOT NULL, state TEXT NOT NULL, archived_at REAL,
    deleted_at REAL, PRIMARY KEY (mailbox, folder, ref));
CREATE INDEX IF NOT EXISTS seen_sha ON seen (mailbox, folder, sha256);
CREATE INDEX IF NOT EXISTS seen_state ON seen (state);
CREATE TABLE IF NOT EXISTS runs (
    mailbox TEXT PRIMARY KEY, last_run REAL, last_ok REAL, failures INTEGER NOT NULL,
    last_error TEXT);
"""


@dataclass(frozen=True, slots=True)
class Seen:
    mailbox: str
    folder: str
    ref: str
    sha256: str | None
    msg_date: float | None
    stem: str


def imap_ref(uidvalidity: int, uid: int) -> str:
    return f"{uidvalidity}:{uid}"


class PullState:
    """The state database; safe to use from one thread at a time per instance."""

    def __init__(self, state_dir: Path) -> None:
        root = state_dir / "pull"
        root.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.path = root / "state.sqlite"
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with immediate(self.conn, self._lock) as conn:
            yield conn

    # --- folders ---------------------------------------------------------------------

    def folder(self, mailbox: str, folder: str) -> tuple[int | None, int]:
        """(uidvalidity, hwm) of a folder; (None, 0) when never pulled."""
        row = self.conn.execute(
            "SELECT uidvalidity, hwm FROM folders WHERE mailbox = ? AND folder = ?",
            (mailbox, folder),
        ).fetchone()
        return (row[0], row[1]) if row else (None, 0)

    def set_folder(self, mailbox: str, folder: str, uidvalidity: int, hwm: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO folders(mailbox, folder, uidvalidity, hwm, updated_at) "
                "VALUES (?,?,?,?,?)",
                (mailbox, folder, uidvalidity, hwm, time.time()),
            )

    # --- messages --------------------------------------------------------------------

    def done_refs(self, mailbox: str, folder: str, prefix: str = "") -> set[str]:
        rows = self.conn.execute(
            "SELECT ref FROM seen WHERE mailbox = ? AND folder = ? AND state = 'done' "
            "AND ref LIKE ? || '%'",
            (mailbox, folder, prefix),
        )
        return {r[0] for r in rows}

    def known_shas(self, mailbox: str, folder: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT sha256 FROM seen WHERE mailbox = ? AND folder = ? AND state = 'done'",
            (mailbox, folder),
        )
        return {r[0] for r in rows if r[0]}

    def begin(self, rows: Iterable[Seen]) -> None:
        """Step 1: these messages are about to be made durable under these stems."""
        with self._tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO seen(mailbox, folder, ref, sha256, msg_date, stem, state) "
                "VALUES (?,?,?,?,?,?,'inflight')",
                [(s.mailbox, s.folder, s.ref, s.sha256, s.msg_date, s.stem) for s in rows],
            )

    def finish(self, rows: Iterable[Seen], forget: Iterable[Seen] = ()) -> None:
        """Step 3: the reports of `rows` are durable; `forget` never became durable."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "UPDATE seen SET state = 'done', sha256 = ?, msg_date = ?, archived_at = ? "
                "WHERE mailbox = ? AND folder = ? AND ref = ?",
                [(s.sha256, s.msg_date, now, s.mailbox, s.folder, s.ref) for s in rows],
            )
            c.executemany(
                "DELETE FROM seen WHERE mailbox = ? AND folder = ? AND ref = ? "
                "AND state = 'inflight'",
                [(s.mailbox, s.folder, s.ref) for s in forget],
            )

    def record_known(self, rows: Iterable[Seen]) -> None:
        """A message whose bytes were archived before (UIDVALIDITY change): just note it."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO seen(mailbox, folder, ref, sha256, msg_date, stem, "
                "state, archived_at) VALUES (?,?,?,?,?,?,'done',?)",
                [(s.mailbox, s.folder, s.ref, s.sha256, s.msg_date, s.stem, now) for s in rows],
            )

    def recover(self, reports_dir: Path, catalog_path: Path) -> tuple[int, int]:
        """Settle `inflight` rows left by a crash; returns (kept, dropped)."""
        rows = self.conn.execute(
            "SELECT mailbox, folder, ref, stem FROM seen WHERE state = 'inflight'"
        ).fetchall()
        if not rows:
            return 0, 0
        ingested: set[str] = set()
        if catalog_path.exists():
            con = sqlite3.connect(f"file:{catalog_path}?mode=ro", uri=True, timeout=30)
            try:
                for (stem,) in {(r[3],) for r in rows}:
                    if con.execute("SELECT 1 FROM reports WHERE stem = ?", (stem,)).fetchone():
                        ingested.add(stem)
            except sqlite3.Error:
                pass
            finally:
                con.close()
        keep: list[tuple[str, str, str]] = []
        drop: list[tuple[str, str, str]] = []
        for mailbox, folder, ref, stem in rows:
            durable = stem in ingested or (reports_dir / f"{stem}.mpr").exists()
            (keep if durable else drop).append((mailbox, folder, ref))
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "UPDATE seen SET state = 'done', archived_at = ? "
                "WHERE mailbox = ? AND folder = ? AND ref = ?",
                [(now, *k) for k in keep],
            )
            c.executemany("DELETE FROM seen WHERE mailbox = ? AND folder = ? AND ref = ?", drop)
        return len(keep), len(drop)

    # --- outcomes (scheduling, alerts) -------------------------------------------------

    def record_run(self, mailbox: str, ok: bool, error: str | None) -> int:
        """Remember a pull's outcome; returns the number of failures in a row."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT failures FROM runs WHERE mailbox = ?", (mailbox,)).fetchone()
            failures = 0 if ok else (row[0] if row else 0) + 1
            c.execute(
                "INSERT INTO runs(mailbox, last_run, last_ok, failures, last_error) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(mailbox) DO UPDATE SET "
                "last_run = excluded.last_run, failures = excluded.failures, "
                "last_error = excluded.last_error, "
                "last_ok = COALESCE(excluded.last_ok, runs.last_ok)",
                (mailbox, now, now if ok else None, failures, error),
            )
        return failures

    def last_run(self, mailbox: str) -> float | None:
        row = self.conn.execute(
            "SELECT last_run FROM runs WHERE mailbox = ?", (mailbox,)
        ).fetchone()
        return row[0] if row else None

    # --- deletion --------------------------------------------------------------------

    def deletable(self, mailbox: str, older_than: float) -> list[Seen]:
        rows = self.conn.execute(
            "SELECT mailbox, folder, ref, sha256, msg_date, stem FROM seen "
            "WHERE mailbox = ? AND state = 'done' AND deleted_at IS NULL "
            "AND msg_date IS NOT NULL AND msg_date < ? ORDER BY folder, ref",
            (mailbox, older_than),
        ).fetchall()
        return [Seen(*r) for r in rows]

    def mark_deleted(self, rows: Iterable[Seen]) -> None:
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "UPDATE seen SET deleted_at = ? WHERE mailbox = ? AND folder = ? AND ref = ?",
                [(now, s.mailbox, s.folder, s.ref) for s in rows],
            )

    def forget_mailbox(self, mailbox: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM seen WHERE mailbox = ?", (mailbox,))
            c.execute("DELETE FROM folders WHERE mailbox = ?", (mailbox,))


def run_outcomes(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each mailbox's last pull, for `status` (read-only: creates nothing; {} if none ran).

    -> {mailbox: {"last_run", "last_ok" (epoch seconds or None), "failures" (in a row),
    "last_error" (one line, never a password)}}
    """
    rows = read_only_rows(
        state_dir / "pull" / "state.sqlite",
        "SELECT mailbox, last_run, last_ok, failures, last_error FROM runs",
    )
    return {
        r[0]: {"last_run": r[1], "last_ok": r[2], "failures": r[3], "last_error": r[4]}
        for r in rows or []
    }


def mailbox_outcomes(boxes: Iterable[Any], state_dir: Path) -> list[dict[str, Any]]:
    """Each configured mailbox (`[[mailbox]]` entries) with its last pull, times in UTC
    ISO form: what `proxy-admin status` and the web's status page show."""
    from archive.timefmt import utc_iso

    boxes = list(boxes)
    runs = run_outcomes(state_dir) if boxes else {}
    out = []
    for box in boxes:
        r = runs.get(box.name, {})
        out.append(
            {
                "name": box.name,
                "protocol": box.protocol,
                "interval": box.interval,
                "last_run": utc_iso(r["last_run"]) if r.get("last_run") else None,
                "last_ok": utc_iso(r["last_ok"]) if r.get("last_ok") else None,
                "failures_in_a_row": r.get("failures", 0),
                "last_error": r.get("last_error"),
            }
        )
    return out
