"""The SQLite catalog (sqlite-utils, WAL): what is archived, where, whose, and from where.

Theory of operation. The catalog is the commit point of ingest: a message exists once its
`messages` row is committed, pointing at a pack record. Each `messages` row extends a
SHA-256 hash chain, link_n = SHA-256(link_{n-1} || blob sha256 || report hash), over rows
in id order, so deleting, reordering or editing a row (or a blob) is detectable by
`Archive.verify()`. `reports` holds provenance: one row per report (or imported file),
several per message when the same bytes were seen again (leave-on-server, one copy per
recipient). Ownership is derived from `addresses`, `reports.pop3_user` and
`user_identities`, and materialised in `ownership` for counts and listing.

One `sqlite3` connection, autocommit mode with explicit BEGIN IMMEDIATE/COMMIT, guarded by
a lock because a Trio service calls it from worker threads.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from .origin import origin_keys
from .sqltx import immediate
from .timefmt import now_iso

SCHEMA_VERSION = 3  # 2: `logins` (local passwords, roles); 3: reports.mailbox/folder/archive_user
GENESIS = "0" * 64

_TABLES: dict[str, tuple[dict[str, Any], Any]] = {
    "messages": (
        {
            "id": int,
            "sha256": str,
            "size": int,
            "pack": int,
            "offset": int,
            "length": int,
            "inner": int,
            "date": int,
            "received_at": str,
            "message_id": str,
            "subject": str,
            "sender": str,
            "has_attachment": int,
            "attachments": str,
            "report_hash": str,
            "chain": str,
            "store": int,
            "ingested_at": str,
        },
        "id",
    ),
    "addresses": ({"message": int, "kind": str, "address": str, "name": str}, None),
    "reports": (
        {
            "id": int,
            "uuid": str,
            "message": int,
            "stem": str,
            "source": str,
            "protocol": str,
            "direction": str,
            "listener": str,
            "received_at": str,
            "client_ip": str,
            "client_port": int,
            "client_tls": str,
            "target_host": str,
            "pop3_user": str,
            "pop3_uidl": str,
            "smtp_helo": str,
            "mail_from": str,
            "rcpt_to": str,
            "auth_user": str,
            "outcome": str,
            "reply": str,
            "size_ok": int,
            "mpr_sha256": str,
            "mpr_mtime_ns": int,
            "mpr_size": int,
            # pulled mail (archive/pull): which [[mailbox]], folder and archive user
            "mailbox": str,
            "folder": str,
            "archive_user": str,
            "ingested_at": str,
            "updated_at": str,
        },
        "id",
    ),
    "users": (
        {
            "id": int,
            "name": str,
            "display_name": str,
            "source": str,
            "created_at": str,
            "updated_at": str,
        },
        "id",
    ),
    "user_identities": ({"user": int, "kind": str, "value": str}, ("user", "kind", "value")),
    "ownership": ({"user": int, "message": int}, ("user", "message")),
    # Local logins (archive/logins.py): one row per user who may log in with a password
    # kept here (argon2id) and/or holds a role other than the default `user`.
    "logins": (
        {"user": int, "password_hash": str, "role": str, "updated_at": str},
        "user",
    ),
    "stores": (
        {"id": int, "name": str, "path": str, "created_at": str, "sealed": int},
        "id",
    ),
    "audit": ({"id": int, "at": str, "actor": str, "action": str, "detail": str}, "id"),
    "meta": ({"key": str, "value": str}, "key"),
}

_INDEXES = [
    ("messages", ["sha256"], True),
    ("messages", ["date"], False),
    ("addresses", ["message", "kind", "address"], True),
    ("addresses", ["address"], False),
    ("reports", ["uuid"], True),
    ("reports", ["message"], False),
    ("reports", ["stem"], False),
    ("users", ["name"], True),
    ("user_identities", ["value"], False),
    ("ownership", ["message"], False),
    ("stores", ["name"], True),
]


_SQL = {int: "INTEGER", str: "TEXT"}


def chain_link(prev: str, blob_sha256: str, report_hash: str) -> str:
    import hashlib  # here: reading the catalog (search) needs no OpenSSL (~2 ms to load)

    h = hashlib.sha256(bytes.fromhex(prev))
    h.update(bytes.fromhex(blob_sha256))
    h.update(bytes.fromhex(report_hash))
    return h.hexdigest()


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self._db: sqlite_utils.Database | None = None
        self.conn.execute("PRAGMA busy_timeout=30000")
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.enable_wal()
        self.conn.execute("PRAGMA synchronous=FULL")
        self._create()

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the connection, for creating and migrating the schema.

        Imported on first use: opening a catalog that is already at SCHEMA_VERSION (every
        `proxy-admin search`) needs only sqlite3, and sqlite_utils costs ~20-35 ms to
        import (issue 12 item 4)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _create(self) -> None:
        has_meta = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta:
            row = self.one("SELECT value FROM meta WHERE key = 'schema_version'")
            if row is not None and row[0] == str(SCHEMA_VERSION):
                return
        with self.transaction():
            for name, (columns, pk) in _TABLES.items():
                self.db.table(name).create(columns, pk=pk, if_not_exists=True)
            have = {c.name for c in self.db["reports"].columns}
            for col, kind in _TABLES["reports"][0].items():
                if col not in have:  # an older catalog: columns are only ever added
                    self.conn.execute(f"ALTER TABLE reports ADD COLUMN {col} {_SQL[kind]}")
            for table, cols, unique in _INDEXES:
                self.db.table(table).create_index(cols, unique=unique, if_not_exists=True)
            self.conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self.conn.execute(
                "INSERT OR IGNORE INTO stores(id, name, path, created_at, sealed) "
                "VALUES (1, 'default', 'packs', ?, 0)",
                (now_iso(),),
            )

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with immediate(self.conn, self.lock) as conn:
            yield conn

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, tuple(params)).fetchall()

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    # --- ingest support --------------------------------------------------------------

    def pack_ends(self) -> dict[int, int]:
        rows = self.query("SELECT pack, MAX(offset + length) AS e FROM messages GROUP BY pack")
        return {r["pack"]: r["e"] for r in rows}

    def chain_head(self, conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT chain FROM messages ORDER BY id DESC LIMIT 1").fetchone()
        return row["chain"] if row else GENESIS

    def find_messages(self, shas: Iterable[str]) -> dict[str, int]:
        shas = list(shas)
        if not shas:
            return {}
        rows = self.query(
            "SELECT id, sha256 FROM messages WHERE sha256 IN (SELECT value FROM json_each(?))",
            (json.dumps(shas),),
        )
        return {r["sha256"]: r["id"] for r in rows}

    def report_states(self) -> tuple[dict[str, tuple[int, int]], set[str]]:
        """stem -> (mtime_ns, size) of the `.mpr` as last ingested; stems still pending."""
        rows = self.query(
            "SELECT stem, mpr_mtime_ns, mpr_size, outcome FROM reports WHERE stem IS NOT NULL"
        )
        states = {r["stem"]: (r["mpr_mtime_ns"], r["mpr_size"]) for r in rows}
        return states, {r["stem"] for r in rows if r["outcome"] == "pending"}

    def message_keys(self, message: int) -> set[str]:
        keys = {
            r["address"]
            for r in self.query(
                "SELECT DISTINCT address FROM addresses WHERE message = ? AND address != ''",
                (message,),
            )
        }
        for r in self.query(
            "SELECT DISTINCT lower(pop3_user) AS u FROM reports "
            "WHERE message = ? AND pop3_user IS NOT NULL AND pop3_user != ''",
            (message,),
        ):
            keys.add(f"pop3:{r['u']}")
        for r in self.query(
            "SELECT DISTINCT mailbox, folder, archive_user FROM reports "
            "WHERE message = ? AND mailbox IS NOT NULL",
            (message,),
        ):
            keys |= origin_keys(r["mailbox"], r["folder"], r["archive_user"])
        return keys

    def refresh_ownership(
        self,
        conn: sqlite3.Connection,
        *,
        messages: list[int] | None = None,
        user: int | None = None,
    ) -> None:
        """Recompute ownership rows for some messages, one user, or everything."""
        if messages is not None:
            arg = json.dumps(messages)
            conn.execute(
                "DELETE FROM ownership WHERE message IN (SELECT value FROM json_each(?))", (arg,)
            )
            where_a = "a.message IN (SELECT value FROM json_each(?))"
            where_r = "r.message IN (SELECT value FROM json_each(?))"
            where_u = where_r
            params: list[Any] = [arg, arg, arg]
        elif user is not None:
            conn.execute("DELETE FROM ownership WHERE user = ?", (user,))
            where_a = where_r = "ui.user = ?"
            where_u = "u.id = ?"
            params = [user, user, user]
        else:
            conn.execute("DELETE FROM ownership")
            where_a = where_r = where_u = "1"
            params = []
        conn.execute(
            "INSERT OR IGNORE INTO ownership(user, message) "
            "SELECT ui.user, a.message FROM addresses a JOIN user_identities ui "
            f"ON ui.kind = 'address' AND ui.value = a.address WHERE {where_a} "
            "UNION SELECT ui.user, r.message FROM reports r JOIN user_identities ui "
            f"ON ui.value = lower(r.pop3_user) WHERE r.pop3_user IS NOT NULL AND {where_r} "
            # pulled mail belongs to its mailbox's archive_user (archive/pull)
            "UNION SELECT u.id, r.message FROM reports r JOIN users u "
            f"ON u.name = r.archive_user WHERE r.archive_user IS NOT NULL AND {where_u}",
            params,
        )

    # --- users -----------------------------------------------------------------------

    def user_keys(self, name: str) -> set[str] | None:
        row = self.one("SELECT id FROM users WHERE name = ?", (name,))
        if row is None:
            return None
        keys: set[str] = set()
        for r in self.query("SELECT kind, value FROM user_identities WHERE user = ?", (row["id"],)):
            if r["kind"] == "address":
                keys.add(r["value"])
            keys.add(f"pop3:{r['value']}")
        keys.add(f"user:{name}")  # mail pulled for this user (archive/origin.py)
        return keys

    # --- audit -----------------------------------------------------------------------

    def audit(
        self, action: str, detail: dict[str, Any] | None = None, *, actor: str | None = None
    ) -> None:
        """Record an action; `actor` defaults to the OS user (the CLI), the web side
        passes the logged-in person ("web:alice")."""
        if actor is None:
            try:
                actor = getpass.getuser()
            except Exception:
                actor = "unknown"
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO audit(at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (now_iso(), actor, action, json.dumps(detail or {}, ensure_ascii=False)),
            )
