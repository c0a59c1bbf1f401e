"""Login throttling per account and per client address (sliding window of failures).

After `max_failures` failed logins for one account, or from one client address, within
`window` seconds, further attempts for that key are refused without checking the
password until the oldest of those failures leaves the window; the page says how long to
wait. Failures are rows in the session store's SQLite file (sessions.py), so every web
worker process sees the same counts; rows older than the window are deleted as new
failures arrive, and the table is capped at `MAX_ROWS` so a flood of made-up account
names cannot grow it without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .sessions import Db

MAX_ROWS = 200_000


class Throttle:
    def __init__(
        self,
        db: Db,
        max_failures: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.max_failures = max_failures
        self.window = window
        self.clock = clock

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until an attempt for all `keys` is allowed again (0 = allowed now)."""
        now = self.clock()
        wait = 0.0
        with self.db.lock:
            for key in keys:
                rows = self.db.conn.execute(
                    "SELECT at FROM login_failures WHERE key = ? AND at > ? "
                    "ORDER BY at DESC LIMIT ?",
                    (key, now - self.window, self.max_failures),
                ).fetchall()
                if len(rows) >= self.max_failures:
                    oldest = rows[-1][0]
                    wait = max(wait, self.window - (now - oldest))
        return wait

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self.db.lock:
            c = self.db.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("DELETE FROM login_failures WHERE at <= ?", (now - self.window,))
                c.executemany(
                    "INSERT INTO login_failures(key, at) VALUES (?, ?)", [(k, now) for k in keys]
                )
                c.execute(
                    "DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM "
                    "login_failures ORDER BY at DESC LIMIT -1 OFFSET ?)",
                    (MAX_ROWS,),
                )
            finally:
                c.execute("COMMIT")

    def succeeded(self, key: str) -> None:
        with self.db.lock:
            self.db.conn.execute("DELETE FROM login_failures WHERE key = ?", (key,))
