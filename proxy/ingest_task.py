"""The service's background ingest task: reports -> archive, without blocking the loop.

Theory of operation. `proxy-admin run` (the single process, or the supervisor when there
are worker processes) runs exactly one of these: the one writer of the archive. Every
blocking step (opening the archive, a batch of `Archive.ingest_pending`, the report
retention sweep) runs in a worker thread; a failure is logged once and retried, never
fatal, because relaying must go on while the archive is unavailable (the reports wait in
the report directory, and `status` counts them).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import trio

from archive import retention as _retention
from archive.ingest import BATCH_ITEMS
from archive.store import Archive, ArchiveBusy

log = logging.getLogger("mailtee.archive")


async def ingest_loop(
    state_dir: Path, *, interval: float = 0.5, retention: float | None = None
) -> None:
    """Background ingest for `proxy-admin run`: never blocks the Trio loop, never dies.

    With `retention` (seconds), archived report pairs are removed that long after they
    were archived (archive.retention); None keeps them.
    """
    next_sweep = 0.0

    reports_dir = state_dir / "reports"
    archive: Archive | None = None
    failing = False
    try:
        while True:
            more = False
            try:
                if archive is None:
                    archive = await trio.to_thread.run_sync(Archive, state_dir)
                stats = await trio.to_thread.run_sync(
                    partial(archive.ingest_pending, reports_dir, max_items=BATCH_ITEMS)
                )
                more = stats.pending > 0
                if retention is not None:
                    if retention == 0 and stats.ingested:
                        await trio.to_thread.run_sync(
                            _retention.after_ingest, reports_dir, stats.ingested, retention
                        )
                    if time.monotonic() >= next_sweep:
                        pause = retention / 2 if retention else _retention.SWEEP_INTERVAL
                        next_sweep = time.monotonic() + min(_retention.SWEEP_INTERVAL, pause)
                        await trio.to_thread.run_sync(archive.sweep_reports, reports_dir, retention)
                if stats.reports:
                    log.info(
                        "archived %d report(s): %d new message(s), %d seen before",
                        stats.reports,
                        stats.new_messages,
                        stats.duplicates,
                    )
                for err in stats.errors:
                    log.warning("archive ingest: %s", err)
                if failing:
                    log.info("archive ingest recovered")
                failing = False
            except ArchiveBusy as e:
                log.debug("archive ingest deferred: %s", e)
            except Exception as e:
                if not failing:
                    log.error("archive ingest failed (will retry): %s", e, exc_info=True)
                failing = True
                if archive is not None:
                    old, archive = archive, None
                    await trio.to_thread.run_sync(old.close_quietly)
            if not more:
                await trio.sleep(interval)
            else:
                await trio.lowlevel.checkpoint()
    finally:
        if archive is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(archive.close_quietly)
