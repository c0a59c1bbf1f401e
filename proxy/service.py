"""The service of `proxy-admin run` in one process: listeners, control socket, alerts,
sd_notify, the demo provider and the main process's tasks (ingest, pull schedule, web).

Theory of operation. `run_service` is what systemd's ExecStart runs (through the CLI).
With one worker it serves the listeners in this process (proxy.serve.serve_listeners);
with more it hands over to the supervisor (proxy.workers), which runs the listeners in
worker processes and the rest here. Both models start the same main-process tasks
(proxy.service_common.start_service_tasks). SIGHUP reloads; SIGTERM/SIGINT stop.
"""

from __future__ import annotations

import logging
import signal
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import Config, Secrets
from admin.config import state_dir as resolve_state_dir
from proxy import control, notify
from proxy.alerts import Alerter, watch_disk, watch_stats
from proxy.serve import ProxyService, serve_listeners
from proxy.service_common import (
    describe,
    recover_spool,
    reload_with,
    service_status_fields,
    start_demo,
    start_service_tasks,
    token_store,
)

log = logging.getLogger("mailtee.serve")


async def service_status(
    service: ProxyService, alerter: Alerter, config_path: Path
) -> dict[str, Any]:
    """The full `status` answer of the control socket (file-system parts in a thread)."""
    extra = await service_status_fields(service.state_dir, service.config, alerter, config_path)
    return {**service.snapshot(), **extra}


async def reload_from_disk(
    service: ProxyService, alerter: Alerter, config_path: Path
) -> dict[str, Any]:
    """SIGHUP / `reload` on the control socket: re-read config.toml and secrets.toml.

    A config that does not load or apply leaves the running configuration in place.
    """
    return await reload_with(service.reload, alerter, config_path)


async def _control_handler(
    service: ProxyService, alerter: Alerter, config_path: Path, request: dict[str, Any]
) -> dict[str, Any]:
    command = request["command"]
    if command == "status":
        return {"ok": True, "status": await service_status(service, alerter, config_path)}
    if command == "reload":
        return await reload_from_disk(service, alerter, config_path)
    return {"ok": False, "error": f"unknown command {command!r} (status, reload)"}


async def run_service(
    config: Config,
    secrets: Secrets,
    config_path: Path,
    *,
    workers: int = 1,
    task_status: trio.TaskStatus[ProxyService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The foreground service (`proxy-admin run`): listeners, control socket, alerts,
    sd_notify, demo provider, ingest. SIGHUP reloads; SIGTERM/SIGINT stop.

    With `workers` > 1 the supervisor of proxy.workers runs instead (the listeners in
    that many worker processes); `started()` then gets the Supervisor.
    """
    if workers > 1:
        from proxy.workers import run_supervisor

        await run_supervisor(
            config,
            secrets,
            config_path,
            count=workers,
            task_status=task_status,  # type: ignore[arg-type]
        )
        return
    state = resolve_state_dir(config, config_path)
    recover_spool(state)
    demo = start_demo(config, state)
    alerter = Alerter(config.alerts, config.hostname)
    try:
        async with trio.open_nursery() as nursery:
            # Open the signal receiver first: a SIGHUP right after READY=1 is not lost.
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                service: ProxyService = await nursery.start(
                    partial(serve_listeners, token_store=token_store(config_path)),
                    config,
                    secrets,
                    state,
                )
                service.tokens.alert = alerter.alert
                nursery.start_soon(alerter.run)
                nursery.start_soon(watch_stats, alerter, service.stats)
                nursery.start_soon(watch_disk, alerter, state)
                # ingest, the mailbox pull schedule, the web side (proxy/service_common.py)
                start_service_tasks(nursery, service, state, alerter.alert, config_path)
                handler = partial(_control_handler, service, alerter, config_path)
                try:
                    await nursery.start(control.serve, control.socket_path(state), handler)
                except OSError as e:
                    log.error("no control socket (status shows less): %s", describe(e))
                nursery.start_soon(notify.watchdog_loop)
                notify.notify("READY=1", f"STATUS=serving {len(service.ports)} listener(s)")
                log.info("mailtee running; state in %s", state)
                task_status.started(service)
                async for sig in sigs:
                    if sig == signal.SIGHUP:
                        log.info("SIGHUP: reloading %s", config_path)
                        await reload_from_disk(service, alerter, config_path)
                        continue
                    log.info("stopping on %s", signal.Signals(sig).name)
                    notify.notify("STOPPING=1")
                    nursery.cancel_scope.cancel()
                    break
    finally:
        if demo is not None:
            demo.stop()
