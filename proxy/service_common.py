"""What the single-process service (proxy.service) and the supervisor of worker
processes (proxy.workers) share: start-up recovery, the demo provider, the parts of
`status` and of a reload that do not depend on the process model, and the tasks only the
main process runs (`start_service_tasks`).

It imports neither proxy.service nor proxy.workers (they import it), so the two process
models depend on one base and not on each other.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import Config, ConfigError, Secrets, check_secrets, load_config, load_secrets
from archive.errtext import describe
from archive.reports import backlog
from archive.spool import Spool
from proxy import notify
from proxy.alerts import Alerter
from proxy.errors import ProxyError

log = logging.getLogger("mailtee.serve")


def disk_free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


async def service_status_fields(
    state: Path, config: Config, alerter: Alerter, config_path: Path
) -> dict[str, Any]:
    """The parts of `status` that are the same for one process and for the supervisor."""
    from archive.retention import retention_status

    pending = await trio.to_thread.run_sync(backlog, state)
    free = await trio.to_thread.run_sync(disk_free, state)
    alerts_cfg = config.alerts
    return {
        "config": str(config_path),
        "state_dir": str(state),
        "reports_pending": pending,
        **await trio.to_thread.run_sync(retention_status, state, config),
        "disk_free_bytes": free,
        "low_disk_mb": alerts_cfg.low_disk_mb,
        "last_errors": list(alerter.recent),
        "alerts": {
            "mail": alerts_cfg.mail_enabled,
            "mailed": alerter.mailed,
            "mail_failures": alerter.mail_failures,
        },
    }


def start_demo(config: Config, state: Path) -> Any:
    """The built-in demo provider (`[demo] enabled`), or None."""
    if not config.demo.enabled:
        return None
    from proxy.demo_provider import DemoProvider

    demo = DemoProvider(state / "demo", config.demo.smtp_port, config.demo.pop3_port)
    demo.start()
    log.info(
        "demo provider: smtp 127.0.0.1:%d pop3 127.0.0.1:%d, mailboxes in %s",
        config.demo.smtp_port,
        config.demo.pop3_port,
        state / "demo",
    )
    return demo


def recover_spool(state: Path) -> None:
    """Before serving: rebuild the reports of every spool area's journal (archive.commit),
    then remove the work-in-progress files an earlier crash left."""
    from archive.commit import recover

    reports = state / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    spool_root = state / "spool"
    areas = sorted(spool_root.iterdir()) if spool_root.is_dir() else []
    for area in areas:
        counts = recover(reports, area)
        if counts["restored"] or counts["dropped"]:
            log.warning(
                "spool %s recovered after a crash: %d report(s) restored (outcome pending), "
                "%d unacknowledged message(s) dropped",
                area.name,
                counts["restored"],
                counts["dropped"],
            )
    for orphan in Spool(reports).cleanup_orphans():
        log.warning("removed unfinished report file from an earlier crash: %s", orphan.name)


def load_pair(config_path: Path) -> tuple[Config, Secrets]:
    config = load_config(config_path)
    secrets = load_secrets(config_path, strict_mode=True)
    check_secrets(config, secrets)
    return config, secrets


async def reload_with(apply: Any, alerter: Alerter, config_path: Path) -> dict[str, Any]:
    """Load the config from disk and hand it to `apply(config, secrets)` (one process
    or the supervisor of the workers)."""
    monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")
    try:
        config, secrets = await trio.to_thread.run_sync(load_pair, config_path)
        result = await apply(config, secrets)
    except (ConfigError, ProxyError, OSError, ssl.SSLError) as e:
        reason = describe(e)
        alerter.alert("reload", "configuration reload failed; the previous one stays", reason)
        return {"ok": False, "error": reason}
    finally:
        notify.notify("READY=1")
    alerter.configure(config.alerts, config.hostname)
    logging.getLogger().setLevel(getattr(logging, config.log_level.upper(), logging.INFO))
    for err in result["errors"]:
        alerter.alert("reload", "a listener could not be started", err)
    return {"ok": not result["errors"], "reload": result}


def token_store(config_path: Path) -> Any:
    from accounts.store import TokenStore
    from admin.config import secrets_path

    return TokenStore.beside(secrets_path(config_path))


def start_service_tasks(
    nursery: trio.Nursery,
    service: Any,
    state: Path,
    alert: Callable[[str, str, str], Any],
    config_path: Path,
) -> None:
    """Start the main process's own supervised children and periodic tasks.

    Called once by the service (single process or supervisor), after the listeners are
    up and before READY=1. `service` is what holds the current (reloaded) configuration:
    `.config`, `.secrets`, `.state_dir` (a ProxyService, or the Supervisor). Add further
    children here (each a task that supervises its own process and restarts it, never
    blocking the loop).
    """
    from archive.pull.schedule import pull_loop
    from archive.retention import parse_duration
    from proxy.ingest_task import ingest_loop

    config: Config = service.config
    retention = parse_duration(config.report_retention)
    nursery.start_soon(partial(ingest_loop, state, retention=retention))
    # [[mailbox]] interval; a mailbox with `account` logs in with the tokens beside secrets
    nursery.start_soon(pull_loop, service, alert, token_store(config_path))
    if config.web.enabled:  # in a supervised child: a crash there never stops relaying
        from web.supervisor import supervise

        nursery.start_soon(supervise, config_path)
