"""Run the web side in child processes of `proxy-admin run`; restart each when it dies.

Why a child: the web side parses hostile HTML, serves browsers and runs third-party
code (Starlette, Hypercorn, nh3); none of that may take relaying down. The child is
`python -m web --config PATH web serve`; it reads the config itself, opens the archive
read-mostly (audit rows are small catalog transactions) and never touches the spool.
`[web] workers` children (default 2) share the HTTPS port (SO_REUSEPORT) and the
session store, so two cores serve pages in parallel.
A crash is logged and the child restarted after a growing pause (1 s doubling to 60 s;
back to 1 s after a minute of good health). When the service stops, the child gets
SIGTERM (then SIGKILL after STOP_TIMEOUT), and PR_SET_PDEATHSIG makes the kernel send it
one if the parent dies without cleaning up. That signal comes when the *thread* that
forked the child exits, so the child is forked from the Trio thread, which lives as long
as the service (as proxy/workers.py does): `trio.run_process` forks in one of Trio's
worker threads, which exits after 10 s idle, and every web child used to get its SIGTERM
then, 10 s after each start. A stop often reaches the child first (Ctrl-C
signals the whole foreground process group, systemd's stop the whole control group), so
a child that ends as a stopped one does (status 0, SIGTERM, SIGINT) is reported only if
the service is still running `STOP_GRACE` later: a clean stop logs no error.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import trio

from archive.children import child_env, stop_children
from archive.libc import die_with_parent, function

log = logging.getLogger("mailtee.web")

MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0
HEALTHY_AFTER = 60.0
#: how long a child that ended like a stopped one waits for the service's own stop
STOP_GRACE = 1.0
#: how a web child ends when it is told to stop
STOPPED_CODES = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
#: how long a stopping service waits for a web child after SIGTERM before SIGKILL
STOP_TIMEOUT = 5.0


def _die_with_parent() -> None:
    """In the forked child before exec: only a C call (the parent looked prctl up)."""
    die_with_parent(signal.SIGTERM)


def command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "web", "--config", str(config_path), "web", "serve"]


async def supervise(
    config_path: Path, *, workers: int | None = None, max_restarts: int | None = None
) -> None:
    """Keep `[web] workers` web children running until cancelled (the service stopping)."""
    if workers is None:
        from admin.config import load_config

        config = await trio.to_thread.run_sync(load_config, config_path)
        workers = config.web.workers
    async with trio.open_nursery() as nursery:
        for n in range(workers):
            nursery.start_soon(_keep_running, config_path, n + 1, max_restarts)


async def _run_child(config_path: Path, env: dict[str, str]) -> int:
    """Run one web child to its end; stop it (SIGTERM, then SIGKILL) when cancelled."""
    function("prctl")  # looked up here, not in the forked child (see _die_with_parent)
    # Forked from the Trio thread itself, ~1 ms: see the module docstring.
    proc = subprocess.Popen(  # noqa: ASYNC220
        command(config_path), env=env, preexec_fn=_die_with_parent
    )
    try:
        return await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
    finally:
        if proc.poll() is None:  # cancelled: the service is stopping
            with trio.CancelScope(shield=True):
                await stop_children([proc], STOP_TIMEOUT)


async def _keep_running(config_path: Path, worker: int, max_restarts: int | None) -> None:
    backoff = MIN_BACKOFF
    restarts = 0
    env = child_env()
    while True:
        started = trio.current_time()
        log.info("web: starting web worker %d (%s)", worker, config_path)
        try:
            code: int | None = await _run_child(config_path, env)
        except OSError as e:
            code = None
            log.error("web: cannot start web worker %d: %s", worker, e.strerror or e)
        if trio.current_time() - started >= HEALTHY_AFTER:
            backoff = MIN_BACKOFF
        if code in STOPPED_CODES:
            # the service may be stopping too: then this sleep is cancelled, no report
            await trio.sleep(STOP_GRACE)
        log.error(
            "web: web worker %d exited (%s); relaying continues, restarting in %.0f s",
            worker,
            f"status {code}" if code is not None else "not started",
            backoff,
        )
        restarts += 1
        if max_restarts is not None and restarts > max_restarts:
            return
        await trio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
