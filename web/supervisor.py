"""Run the web side in a child process of `proxy-admin run` and restart it when it dies.

Why a child: the web side parses hostile HTML, serves browsers and runs third-party
code (Starlette, Hypercorn, nh3); none of that may take relaying down. The child is
`python -m web --config PATH web serve`; it reads the config itself, opens the archive
read-mostly (audit rows are small catalog transactions) and never touches the spool.
A crash is logged and the child restarted after a growing pause (1 s doubling to 60 s;
back to 1 s after a minute of good health). When the service stops, the child gets
SIGTERM (trio cancels `run_process`), and PR_SET_PDEATHSIG makes the kernel send it one
if the parent dies without cleaning up.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

import trio

log = logging.getLogger("mailtee.web")

MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0
HEALTHY_AFTER = 60.0
_PR_SET_PDEATHSIG = 1
#: where the `web` package lives, so the child imports the same code as the service
_ROOT = str(Path(__file__).resolve().parents[1])


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "web", "--config", str(config_path), "web", "serve"]


async def supervise(config_path: Path, *, max_restarts: int | None = None) -> None:
    """Keep the web child running until cancelled (the service stopping)."""
    backoff = MIN_BACKOFF
    restarts = 0
    root = _ROOT
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    while True:
        started = trio.current_time()
        log.info("web: starting the web side (%s)", config_path)
        try:
            proc = await trio.run_process(
                command(config_path),
                check=False,
                env=env,
                preexec_fn=_die_with_parent,
            )
            code = proc.returncode
        except OSError as e:
            code = None
            log.error("web: cannot start the web side: %s", e.strerror or e)
        if trio.current_time() - started >= HEALTHY_AFTER:
            backoff = MIN_BACKOFF
        log.error(
            "web: the web side exited (%s); relaying continues, restarting in %.0f s",
            f"status {code}" if code is not None else "not started",
            backoff,
        )
        restarts += 1
        if max_restarts is not None and restarts > max_restarts:
            return
        await trio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
