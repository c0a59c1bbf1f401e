"""Pulled messages -> the proxy's durable report writer (archive/spool.py), in batches.

Every pulled message becomes an ordinary `.eml` + `.mpr` pair (protocol `imap` or
`pop3-pull`, direction `archived`, a `pull` section with the provenance), so ingest,
dedup by SHA-256 and ownership are the proxy's own. A batch's commits (each an fsync'd
file pair) run on a few threads at once: the file system merges concurrent flushes, so
a batch costs about one journal commit instead of one per message. `commit_batch`
returns only after every report of the batch is durable or has failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admin.config import MailboxConfig
from archive.spool import MessageWriter, Spool, SpoolError

from . import multidrop

#: concurrent commits per batch
COMMIT_THREADS = 8
PROTOCOLS = {"imap": "imap", "pop3": "pop3-pull"}


@dataclass(slots=True)
class Pending:
    """One message on its way into the spool, and what state must remember about it."""

    writer: MessageWriter
    ref: str
    folder: str
    msg_date: float | None
    error: str | None = None


class PullWriter:
    def __init__(self, reports_dir: Path, box: MailboxConfig, tls_version: str | None) -> None:
        reports_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(reports_dir)
        self.box = box
        self.tls_version = tls_version
        self._pool = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="pull-commit")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def open(self, folder: str, provenance: dict[str, Any]) -> MessageWriter:
        box = self.box
        pull = {
            "mailbox": box.name,
            "server": box.server,
            "account": box.user,
            "folder": folder or None,
            **provenance,
            "archive_user": box.archive_user,
            "multidrop": box.multidrop,
        }
        report = {
            "direction": "archived",
            "listener": None,
            "client": None,
            "target": {"host": box.server, "port": box.port, "tls": self.tls_version},
            "smtp": None,
            "pop3": None,
            "pull": pull,
        }
        return self.spool.open_message(PROTOCOLS[box.protocol], report)

    def finish_message(self, p: Pending, head: bytes) -> None:
        """Before commit: add what the message's own headers say (multidrop owners)."""
        if self.box.multidrop:
            report = p.writer.report
            assert isinstance(report, dict)  # a pull's report is plain JSON (open() above)
            report["pull"]["recipients"] = multidrop.recipients(head)

    def commit_batch(self, batch: Sequence[Pending]) -> None:
        """Make every report of `batch` durable; failures are noted in `Pending.error`."""
        for f in self.start_commit(batch):
            f.result()

    def start_commit(self, batch: Sequence[Pending]) -> list[Future[None]]:
        """Begin making `batch` durable on the commit threads; wait on the futures."""

        def one(p: Pending) -> None:
            try:
                p.writer.commit("delivered", None)
            except SpoolError as e:
                p.error = str(e)

        return [self._pool.submit(one, p) for p in batch]
