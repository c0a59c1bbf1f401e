"""One write transaction on a shared SQLite connection, for the catalog and the pull
state database alike; and one read-only query for `status` (which must create nothing).

`BEGIN IMMEDIATE` takes the database's write lock at the start (not at the first write),
so a transaction never fails half-way with SQLITE_BUSY after reading; any exception,
cancellation included, rolls back and propagates. `lock` serialises the threads that
share the connection (both databases are used from Trio worker threads).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def immediate(
    conn: sqlite3.Connection, lock: threading.Lock | threading.RLock
) -> Iterator[sqlite3.Connection]:
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def read_only_rows(path: Path, sql: str) -> list[Any] | None:
    """The rows of `sql` on the database at `path`, opened read-only (never created);
    None if it is missing or cannot be read (busy, damaged, an older schema)."""
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
