"""Worker processes: N copies of the listeners on the same ports, one supervisor.

Theory of operation. `proxy-admin run` with `workers` > 1 (default: one per core) runs
this module's supervisor. It
1. recovers every spool area (archive.commit journals) and removes crash leftovers,
2. reserves each listener's port: a socket bound with SO_REUSEPORT but not listening
   (proxy.ports), so a port in use is an error here, and port 0 resolves once,
3. starts workers `python -m proxy.workers CONFIG INDEX`; each binds the same ports with
   SO_REUSEPORT (the kernel spreads connections over them), relays with its own group
   committer on `state_dir/spool/w<INDEX>`, and answers on `state_dir/run/w<INDEX>.sock`,
4. runs what exists once per service: the ingest writer (the only archive writer), the
   disk watch and alerts, sd_notify/watchdog, and the control socket, whose `status`
   merges every worker's sessions and whose `reload` (also SIGHUP) re-reads the config,
   updates the reservations and then reloads every worker,
5. restarts a worker that dies (the new one first recovers its spool area), and on
   SIGTERM stops them all.
Workers die with the supervisor (PR_SET_PDEATHSIG, SIGKILL: a kill -9 of the main
process is a kill -9 of the service, as systemd's control group makes it anyway); as a
second line, each reads a pipe from the supervisor on stdin and stops when it closes.

Other supervised children and periodic tasks of the service (a web server process, a
mailbox pull scheduler, ...) are started in `start_service_tasks` below: the one place
that runs in the main process whatever the number of workers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import Config, ListenerConfig, Secrets
from admin.config import state_dir as resolve_state_dir
from archive.children import child_env, stop_children
from archive.libc import die_with_parent
from archive.timefmt import utc_iso
from proxy import control, notify
from proxy.errors import ProxyError
from proxy.ports import bind_reuseport

log = logging.getLogger("mailtee.workers")

#: how long a stopping supervisor waits for its workers before SIGKILL
STOP_TIMEOUT = 10.0
#: how long a new worker may take to bind its listeners and report ready
START_TIMEOUT = 60.0
#: restart back-off for a worker that keeps dying (doubles up to the maximum)
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 10.0
READY_LINE = b"mailtee-worker-ready\n"
PORTS_FILE = "ports.json"


def worker_count(config: Config) -> int:
    """`workers` from the config; 0 (the default) means one per CPU core."""
    n = getattr(config, "workers", 0) or 0
    return n if n > 0 else max(1, len(os.sched_getaffinity(0)))


def run_dir(state: Path) -> Path:
    return state / "run"


def worker_socket(state: Path, index: int) -> Path:
    return run_dir(state) / f"w{index}.sock"


# --- services shared by every mode ---------------------------------------------------


# --- the supervisor ------------------------------------------------------------------


@dataclass
class _Reservation:
    config: ListenerConfig
    sockets: list[socket.socket]
    port: int

    @property
    def bind(self) -> tuple[str, int | None]:
        return self.config.listen, self.config.bind_port


def _reserve(lc: ListenerConfig) -> _Reservation:
    try:
        socks = bind_reuseport(lc.listen, lc.bind_port)
    except OSError as e:
        raise ProxyError(
            f"listener {lc.name}: cannot listen on {lc.listen}:{lc.bind_port}: {e.strerror}"
        ) from None
    return _Reservation(lc, socks, socks[0].getsockname()[1])


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    last_exit: int | None = None


@dataclass
class Supervisor:
    config: Config
    secrets: Secrets
    config_path: Path
    state: Path
    count: int
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False
    reloads: int = 0
    last_reload: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    _reload_lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def state_dir(self) -> Path:
        """The same name as ProxyService's (start_service_tasks reads either)."""
        return self.state

    # --- ports ---------------------------------------------------------------------
    def reserve_all(self) -> None:
        try:
            for lc in self.config.listener:
                self.reservations[lc.name] = _reserve(lc)
        except BaseException:
            self.release_all()
            raise
        self.write_ports()

    def release_all(self) -> None:
        for r in self.reservations.values():
            for s in r.sockets:
                s.close()
        self.reservations.clear()

    def write_ports(self) -> None:
        from archive.durable import write_atomic

        ports = {name: r.port for name, r in self.reservations.items()}
        run_dir(self.state).mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir(self.state) / PORTS_FILE, json.dumps(ports).encode(), 0o640)

    def update_reservations(self, config: Config) -> list[str]:
        """Mirror ProxyService.reload: rebind only what moved; errors per listener."""
        errors = []
        wanted = {lc.name: lc for lc in config.listener}
        for name in [n for n in self.reservations if n not in wanted]:
            for s in self.reservations.pop(name).sockets:
                s.close()
        for name, lc in wanted.items():
            old = self.reservations.get(name)
            if old is not None and old.bind == (lc.listen, lc.bind_port):
                old.config = lc
                continue
            if old is not None:
                for s in self.reservations.pop(name).sockets:
                    s.close()
            try:
                self.reservations[name] = _reserve(lc)
            except ProxyError as e:
                errors.append(str(e))
        self.write_ports()
        return errors

    # --- workers -------------------------------------------------------------------
    async def keep_worker(
        self, w: _Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run worker `w`, restarting it whenever it dies, until the service stops."""
        delay = RESTART_DELAY
        first = True
        while True:
            await self._spawn(w)
            if first:
                task_status.started()
                first = False
            assert w.proc is not None
            code = await trio.to_thread.run_sync(w.proc.wait, abandon_on_cancel=True)
            w.last_exit = code
            if w.proc.stdin is not None:
                w.proc.stdin.close()
            if self.stopping:
                return
            if code in (0, -signal.SIGTERM, -signal.SIGINT):
                # systemd signals the whole control group: the supervisor's own
                # SIGTERM may be a moment behind the worker's
                await trio.sleep(1.0)
                if self.stopping:
                    return
            lived = time.time() - w.started_at
            log.error(
                "worker %d (pid %d) exited with %s after %.0f s; restarting it",
                w.index,
                w.proc.pid,
                _exit_text(code),
                lived,
            )
            w.restarts += 1
            delay = RESTART_DELAY if lived > 30 else min(delay * 2, RESTART_DELAY_MAX)
            await trio.sleep(delay)

    async def _spawn(self, w: _Worker) -> None:
        env = child_env(drop=("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"))
        cmd = [sys.executable, "-m", "proxy.workers", str(self.config_path), str(w.index)]
        cmd.append(str(self.count))
        cmd.append(str(os.getpid()))
        # Spawned from the Trio thread itself (not a worker thread as with
        # trio.lowlevel.open_process): the child's PR_SET_PDEATHSIG fires when the thread
        # that forked it exits, and this one lives as long as the supervisor.
        proc = subprocess.Popen(  # noqa: ASYNC220 - see above; fork+exec takes ~ms
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        w.proc, w.started_at = proc, time.time()
        assert proc.stdout is not None
        out = proc.stdout

        def read_ready() -> bool:
            buf = b""
            while READY_LINE not in buf:
                chunk = os.read(out.fileno(), 256)
                if not chunk:
                    return False
                buf += chunk
            return True

        ready = False
        with trio.move_on_after(START_TIMEOUT):
            ready = await trio.to_thread.run_sync(read_ready, abandon_on_cancel=True)
        if not ready and proc.poll() is None:
            log.error("worker %d did not start within %.0f s; killing it", w.index, START_TIMEOUT)
            proc.kill()
        out.close()

    async def stop_workers(self) -> None:
        self.stopping = True
        await stop_children([w.proc for w in self.workers if w.proc is not None], STOP_TIMEOUT)
        for w in self.workers:  # a cancelled keep_worker did not get to close it
            if w.proc is not None and w.proc.stdin is not None:
                w.proc.stdin.close()

    async def ask(self, w: _Worker, command: str, wait: float = 10.0) -> dict[str, Any] | None:
        path = worker_socket(self.state, w.index)
        try:
            return await trio.to_thread.run_sync(partial(control.request, path, command, wait))
        except (OSError, control.ControlError):
            return None

    # --- status and reload ---------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        replies = []
        async with trio.open_nursery() as nursery:
            slots: list[dict[str, Any] | None] = [None] * len(self.workers)

            async def one(i: int, w: _Worker) -> None:
                # short: `proxy-admin status` itself waits 3 s for the whole answer
                slots[i] = await self.ask(w, "status", 1.5)

            for i, w in enumerate(self.workers):
                nursery.start_soon(one, i, w)
        replies = slots
        workers = []
        listeners: dict[str, dict[str, Any]] = {}
        draining: dict[str, int] = {}
        failures = 0
        last_error = None
        for w, reply in zip(self.workers, replies, strict=True):
            snap = (reply or {}).get("status") if reply and reply.get("ok") else None
            alive = w.proc is not None and w.proc.poll() is None
            entry: dict[str, Any] = {
                "worker": w.index,
                "pid": w.proc.pid if w.proc is not None else None,
                "alive": alive,
                "answering": snap is not None,
                "started_at": utc_iso(w.started_at) if w.started_at else None,
                "restarts": w.restarts,
                "active_sessions": 0,
                "sessions": {},
            }
            if snap is not None:
                entry["active_sessions"] = snap.get("active_sessions", 0)
                entry["sessions"] = {
                    x["name"]: x.get("active_sessions", 0) for x in snap.get("listeners", [])
                }
                entry["reloads"] = snap.get("reloads", 0)
                entry["commit"] = snap.get("commit")
                for x in snap.get("listeners", []):
                    agg = listeners.setdefault(x["name"], {"active_sessions": 0, "workers": 0})
                    agg["active_sessions"] += x.get("active_sessions", 0)
                    agg["workers"] += 1
                for k, v in (snap.get("draining") or {}).items():
                    draining[k] = draining.get(k, 0) + v
                    entry["sessions"][k] = v
                failures += snap.get("archive_failures", 0)
                last_error = snap.get("last_archive_error") or last_error
            workers.append(entry)
        out_listeners = []
        for name, r in self.reservations.items():
            lc = r.config
            agg = listeners.get(name, {"active_sessions": 0, "workers": 0})
            out_listeners.append(
                {
                    "name": name,
                    "protocol": lc.protocol,
                    "listen": lc.listen,
                    "port": r.port,
                    "target_host": lc.target_host,
                    "target_port": lc.upstream_port,
                    "client_tls": lc.client_tls,
                    "target_tls": lc.target_tls,
                    "accepting": agg["workers"] > 0,
                    "accepting_workers": agg["workers"],
                    "active_sessions": agg["active_sessions"],
                }
            )
        return {
            "pid": os.getpid(),
            "started_at": utc_iso(self.started_at),
            "listeners": out_listeners,
            "draining": draining,
            "active_sessions": sum(e["active_sessions"] for e in workers),
            "archive_failures": failures,
            "last_archive_error": last_error,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "workers": workers,
        }

    async def reload(self, config: Config, secrets: Secrets) -> dict[str, Any]:
        async with self._reload_lock:
            errors = self.update_reservations(config)
            self.config, self.secrets = config, secrets
            results = []
            for w in self.workers:
                reply = await self.ask(w, "reload")
                results.append(reply)
                if reply is None:
                    errors.append(f"worker {w.index} did not answer the reload")
                elif not reply.get("ok"):
                    errors.extend(
                        reply.get("reload", {}).get("errors", []) or [str(reply.get("error"))]
                    )
            merged: dict[str, Any] = {"added": [], "removed": [], "changed": [], "unchanged": []}
            first = next((r for r in results if r and r.get("reload")), None)
            if first:
                for k in merged:
                    merged[k] = first["reload"].get(k, [])
            merged["errors"] = list(dict.fromkeys(errors))
            self.reloads += 1
            self.last_reload = {"at": utc_iso(time.time()), **merged}
            log.info(
                "configuration reloaded in %d worker(s): errors=%d", len(self.workers), len(errors)
            )
            return merged


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return f"exit code {code}"


async def run_supervisor(
    config: Config,
    secrets: Secrets,
    config_path: Path,
    *,
    count: int = 0,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The service with `count` worker processes (0: `workers` of the config)."""
    from proxy.alerts import Alerter, watch_disk
    from proxy.service_common import (
        describe,
        recover_spool,
        service_status_fields,
        start_demo,
        start_service_tasks,
    )

    state = resolve_state_dir(config, config_path)
    recover_spool(state)
    sup = Supervisor(config, secrets, config_path, state, count or worker_count(config))
    sup.reserve_all()
    demo = start_demo(config, state)
    alerter = Alerter(config.alerts, config.hostname)
    try:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                sup.workers = [_Worker(i) for i in range(sup.count)]
                for w in sup.workers:
                    await nursery.start(sup.keep_worker, w)
                nursery.start_soon(alerter.run)
                nursery.start_soon(watch_disk, alerter, state)
                start_service_tasks(nursery, sup, state, alerter.alert, config_path)

                async def status() -> dict[str, Any]:
                    snap = await sup.snapshot()
                    extra = await service_status_fields(state, sup.config, alerter, config_path)
                    return {**snap, **extra}

                async def reload() -> dict[str, Any]:
                    from proxy.service_common import reload_with

                    return await reload_with(sup.reload, alerter, config_path)

                async def handler(request: dict[str, Any]) -> dict[str, Any]:
                    command = request["command"]
                    if command == "status":
                        return {"ok": True, "status": await status()}
                    if command == "reload":
                        return await reload()
                    return {"ok": False, "error": f"unknown command {command!r} (status, reload)"}

                try:
                    await nursery.start(control.serve, control.socket_path(state), handler)
                except OSError as e:
                    log.error("no control socket (status shows less): %s", describe(e))
                nursery.start_soon(notify.watchdog_loop)
                notify.notify(
                    "READY=1",
                    f"STATUS=serving {len(sup.reservations)} listener(s) in {sup.count} workers",
                )
                log.info("mailtee running with %d workers; state in %s", sup.count, state)
                task_status.started(sup)
                async for sig in sigs:
                    if sig == signal.SIGHUP:
                        log.info("SIGHUP: reloading %s in every worker", config_path)
                        await reload()
                        continue
                    log.info("stopping on %s", signal.Signals(sig).name)
                    notify.notify("STOPPING=1")
                    await sup.stop_workers()
                    nursery.cancel_scope.cancel()
                    break
    finally:
        sup.stopping = True
        with trio.CancelScope(shield=True):
            await sup.stop_workers()
        sup.release_all()
        if demo is not None:
            demo.stop()


# --- a worker ------------------------------------------------------------------------


def _die_with_parent(parent: int) -> bool:
    """SIGKILL this worker when the supervisor dies (as systemd's control group would);
    False when it is already gone."""
    die_with_parent(signal.SIGKILL)
    return os.getppid() == parent


async def _stop_with_parent(cancel: trio.CancelScope) -> None:
    """Stop when the supervisor's end of our stdin pipe closes (it died or exited)."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    try:
        while await stream.receive_some(64):
            pass
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()
    log.warning("the supervisor is gone; worker stopping")
    cancel.cancel()


def read_ports(state: Path) -> dict[str, int]:
    try:
        data = json.loads((run_dir(state) / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def share_limits(config: Config, count: int) -> Config:
    """A worker's part of `max_connections` (the cap is for the whole service)."""
    per_worker = -(-config.limits.max_connections // count)
    limits = config.limits.model_copy(update={"max_connections": per_worker})
    return config.model_copy(update={"limits": limits})


async def run_worker(
    config: Config, secrets: Secrets, config_path: Path, index: int, count: int = 1
) -> None:
    from archive.commit import recover, spool_area
    from proxy.alerts import Alerter, watch_stats
    from proxy.serve import serve_listeners
    from proxy.service_common import describe, load_pair, token_store

    state = resolve_state_dir(config, config_path)
    counts = await trio.to_thread.run_sync(recover, state / "reports", spool_area(state, index))
    if counts["restored"] or counts["dropped"]:
        log.warning(
            "worker %d: spool recovered: %d report(s) restored (outcome pending), %d dropped",
            index,
            counts["restored"],
            counts["dropped"],
        )
    alerter = Alerter(config.alerts, config.hostname)
    config = share_limits(config, count)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            service = await nursery.start(
                partial(
                    serve_listeners,
                    config,
                    secrets,
                    state,
                    worker=index,
                    reuse_port=True,
                    port_map=read_ports(state),
                    # the store beside secrets.toml, shared by every worker (see
                    # accounts/store.py: one refresh per expiry for all of them)
                    token_store=token_store(config_path),
                )
            )
            nursery.start_soon(alerter.run)
            nursery.start_soon(watch_stats, alerter, service.stats)
            nursery.start_soon(_stop_with_parent, nursery.cancel_scope)
            lock = trio.Lock()

            async def reload() -> dict[str, Any]:
                async with lock:
                    try:
                        new_config, new_secrets = await trio.to_thread.run_sync(
                            load_pair, config_path
                        )
                        new_config = share_limits(new_config, count)
                        service.port_map = read_ports(state)
                        result = await service.reload(new_config, new_secrets)
                    except Exception as e:
                        return {"ok": False, "error": describe(e)}
                    alerter.configure(new_config.alerts, new_config.hostname)
                    logging.getLogger().setLevel(
                        getattr(logging, new_config.log_level.upper(), logging.INFO)
                    )
                    return {"ok": not result["errors"], "reload": result}

            async def handler(request: dict[str, Any]) -> dict[str, Any]:
                if request["command"] == "status":
                    return {"ok": True, "status": {**service.snapshot(), "worker": index}}
                if request["command"] == "reload":
                    return await reload()
                return {"ok": False, "error": "unknown command"}

            run_dir(state).mkdir(parents=True, exist_ok=True)
            await nursery.start(control.serve, worker_socket(state, index), handler)
            os.write(1, READY_LINE)
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    await reload()  # the supervisor reloads us over the socket; this too
                    continue
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str]) -> int:
    """`python -m proxy.workers CONFIG INDEX COUNT PARENT` (started by the supervisor)."""
    from proxy.logsetup import setup_logging
    from proxy.service_common import load_pair

    config_path, index, count = Path(argv[0]), int(argv[1]), int(argv[2])
    if not _die_with_parent(int(argv[3])):
        return 1
    config, secrets = load_pair(config_path)
    setup_logging(config.log_level)
    try:
        trio.run(run_worker, config, secrets, config_path, index, count)
    except KeyboardInterrupt:
        pass
    except ProxyError as e:
        log.error("worker %d: %s", index, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
