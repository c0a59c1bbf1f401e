"""Server-side sessions: the browser holds a random token, the server only its SHA-256.

A session ends at logout, `idle` seconds after its last request, or `lifetime` seconds
after login, whichever comes first. Tokens are 256-bit `secrets.token_urlsafe` values;
the store keys sessions by the token's hash, so a copy of the store never yields a
usable cookie. Each session has its own CSRF token, compared in constant time on every
POST.

The store is a small SQLite file (`state_dir/web/sessions.sqlite`, mode 0600, WAL) so
that several web worker processes share sessions and login throttling (throttle.py
keeps its table in the same file). Sessions need not survive a power cut
(synchronous=NORMAL): losing one only means logging in again. `last_seen` is written at
most every `touch_interval` seconds, so a busy session does not write on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Beyond this many live sessions the least recently used are dropped (bounded file).
MAX_SESSIONS = 10_000
TOUCH_INTERVAL = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL, client TEXT NOT NULL,
    created REAL NOT NULL, last_seen REAL NOT NULL, csrf TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions(last_seen);
CREATE TABLE IF NOT EXISTS login_failures (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(key, at);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures(at);
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def store_path(state_dir: Path) -> Path:
    return Path(state_dir) / "web" / "sessions.sqlite"


class Db:
    """One SQLite connection per process, shared by threads under a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self.conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock:
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


@dataclass
class Session:
    user: str
    role: str
    client: str
    created: float
    last_seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf.encode(), str(value).encode())

    @property
    def actor(self) -> str:
        return f"web:{self.user}"


class SessionStore:
    def __init__(
        self,
        db: Db,
        lifetime: float,
        idle: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.lifetime = lifetime
        self.idle = idle
        self.clock = clock
        self.touch_interval = min(TOUCH_INTERVAL, idle / 10)

    def create(self, user: str, role: str, client: str) -> tuple[str, Session]:
        """A new session and the token for the cookie (returned once, never stored)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        s = Session(user, role, client, now, now)
        with self.db.lock:
            c = self.db.conn
            c.execute(
                "DELETE FROM sessions WHERE created < ? OR last_seen < ?",
                (now - self.lifetime, now - self.idle),
            )
            c.execute(
                "DELETE FROM sessions WHERE hash IN (SELECT hash FROM sessions "
                "ORDER BY last_seen DESC LIMIT -1 OFFSET ?)",
                (MAX_SESSIONS - 1,),
            )
            c.execute(
                "INSERT INTO sessions(hash, user, role, client, created, last_seen, csrf) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_hash(token), user, role, client, now, now, s.csrf),
            )
        return token, s

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        key = token_hash(token)
        now = self.clock()
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT user, role, client, created, last_seen, csrf FROM sessions WHERE hash = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            s = Session(*row)
            if now - s.created > self.lifetime or now - s.last_seen > self.idle:
                self.db.conn.execute("DELETE FROM sessions WHERE hash = ?", (key,))
                return None
            if now - s.last_seen >= self.touch_interval:
                self.db.conn.execute("UPDATE sessions SET last_seen = ? WHERE hash = ?", (now, key))
                s.last_seen = now
        return s

    def drop(self, token: str | None) -> None:
        if token:
            with self.db.lock:
                self.db.conn.execute("DELETE FROM sessions WHERE hash = ?", (token_hash(token),))

    def drop_user(self, user: str) -> None:
        with self.db.lock:
            self.db.conn.execute("DELETE FROM sessions WHERE user = ?", (user,))

    def __len__(self) -> int:
        with self.db.lock:
            return int(self.db.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
