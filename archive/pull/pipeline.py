"""Steps 1-3 of archive/pull/state.py for a stream of fetched batches (IMAP and POP3)."""

from __future__ import annotations

from typing import Any

from admin.config import MailboxConfig

from .common import BoxResult, PullError
from .state import PullState, Seen
from .writer import Pending, PullWriter


class Pipeline:
    """Steps 1-3 of archive/pull/state.py, one batch in flight: batch k is made durable
    on the commit threads while batch k+1 is fetched. `submit(k+1)` first settles k
    (state `done` only for reports that are durable), then starts k+1; `flush()`
    settles the last one. A spool failure raises PullError once its batch is settled.
    """

    def __init__(
        self, box: MailboxConfig, state: PullState, w: PullWriter, result: BoxResult
    ) -> None:
        self.box, self.state, self.w, self.result = box, state, w, result
        self._inflight: tuple[list[Pending], list[Any]] | None = None

    def submit(self, pending: list[Pending]) -> int:
        settled = self.flush()
        if pending:
            box = self.box
            rows = [
                Seen(box.name, x.folder, x.ref, None, x.msg_date, x.writer.stem) for x in pending
            ]
            self.state.begin(rows)
            self._inflight = (pending, self.w.start_commit(pending))
        return settled

    def flush(self) -> int:
        """Wait for the batch in flight and record it; returns how many were archived."""
        if self._inflight is None:
            return 0
        pending, futures = self._inflight
        self._inflight = None
        for f in futures:
            f.result()
        name = self.box.name
        ok = [x for x in pending if x.error is None]
        bad = [x for x in pending if x.error is not None]
        self.state.finish(
            [Seen(name, x.folder, x.ref, x.writer.sha256, x.msg_date, x.writer.stem) for x in ok],
            [Seen(name, x.folder, x.ref, None, None, x.writer.stem) for x in bad],
        )
        r = self.result
        for x in ok:
            r.new += 1
            r.bytes += x.writer.size
            r.folders[x.folder] = r.folders.get(x.folder, 0) + 1
        if bad:
            raise PullError(f"archive write failed, nothing more pulled: {bad[0].error}")
        return len(ok)

    def close(self) -> None:
        """Settle what is in flight even when the pull is failing (its copies are durable)."""
        try:
            self.flush()
        except PullError:
            pass
