"""Scheduled pulls inside `proxy-admin run`: each mailbox at its `interval`.

One task for all mailboxes: every `TICK` seconds it looks for mailboxes whose interval
has passed since their last pull (remembered in the pull state, so a restart does not
pull everything at once) and pulls those, one at a time, in a worker thread. The
configuration is re-read from the service on every tick, so a reload adds, changes or
removes schedules. A mailbox failing ALERT_AFTER_FAILURES times in a row raises the
"pull" alert (logged, mailed through [alerts], rate-limited by the alerter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import Config, Secrets

log = logging.getLogger("mailtee.pull")

TICK = 30.0


def _due(config: Config, state_dir: Path, now: float) -> list[str]:
    from .state import PullState

    boxes = [b for b in config.mailbox if b.interval_seconds]
    if not boxes:
        return []
    state = PullState(state_dir)
    try:
        due = []
        for b in boxes:
            last = state.last_run(b.name)
            if last is None or now - last >= (b.interval_seconds or 0):
                due.append(b.name)
        return due
    finally:
        state.close()


async def pull_loop(
    service: Any, alert: Callable[[str, str, str], Any], token_store: Any = None
) -> None:
    """Run forever in the service nursery; `service` has .config, .secrets, .state_dir.

    `token_store` (accounts.store.TokenStore): where mailboxes with `account` get their
    OAuth2 tokens; without one such a mailbox fails with a clear error.
    """
    from .runner import pull_mailboxes

    def on_failure(name: str, failures: int, error: str) -> None:
        alert("pull", f"mailbox {name}: {failures} pulls in a row failed", error)

    while True:
        config: Config = service.config
        secrets: Secrets = service.secrets
        try:
            due = await trio.to_thread.run_sync(_due, config, service.state_dir, time.time())
            if due:
                tokens = None
                if token_store is not None and any(b.account for b in config.mailbox):
                    from accounts.blocking import token_source

                    tokens = token_source(config, secrets, token_store)
                await trio.to_thread.run_sync(
                    partial(
                        pull_mailboxes,
                        config,
                        secrets,
                        service.state_dir,
                        due,
                        on_repeated_failure=lambda *a: trio.from_thread.run_sync(on_failure, *a),
                        tokens=tokens,
                    )
                )
        except Exception as e:  # noqa: BLE001 - the schedule must survive anything
            log.error("scheduled pull failed: %s", e)
        await trio.sleep(TICK)
