"""One write transaction on a shared SQLite connection, for the catalog and the pull
state database alike.

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
