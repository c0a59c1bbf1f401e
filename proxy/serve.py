"""Listeners: accept loops, the client allow-list, the connection cap, and the service.

Theory of operation. Each configured listener has its own accept loop
(`trio.serve_listeners`, which logs and retries EMFILE instead of dying) inside its own
cancel scope; the sessions it accepts run in the service nursery instead. So a reload
(SIGHUP, `ProxyService.reload`) can stop accepting on a removed or moved listener while
its sessions in flight finish, start accept loops for new ones, and leave the others
alone (new connections on them get the new settings; a session keeps the settings it was
accepted with). Each connection is checked against `allow_clients` (DESIGN invariant 4:
never an open relay) and the connection cap before any byte reaches the provider, then
handed to a `Session`.

`run_service` is `proxy-admin run`: listeners, control socket (proxy.control), alerts
(proxy.alerts), sd_notify (proxy.notify), the demo provider and the ingest loop.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import ssl
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import (
    Config,
    ConfigError,
    ListenerConfig,
    Secrets,
    check_secrets,
    load_config,
    load_secrets,
)
from admin.config import state_dir as resolve_state_dir
from archive.reports import backlog
from archive.spool import Spool
from proxy import control, memory, notify
from proxy.actions import RelayCore
from proxy.alerts import Alerter, watch_disk, watch_stats
from proxy.errors import ProxyError
from proxy.session import Session, SessionEnv
from proxy.settings import RelaySettings
from proxy.tls import server_context, upstream_context

log = logging.getLogger("mailtee.serve")

REFUSED = {
    "smtp": b"554 5.7.1 Access denied: this proxy does not relay for your address\r\n",
    "pop3": b"-ERR [AUTH] Access denied for your address\r\n",
}
BUSY = {
    "smtp": b"421 4.7.0 Too many connections, try again later\r\n",
    "pop3": b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
}


def make_core(protocol: str, settings: RelaySettings) -> RelayCore:
    if protocol == "smtp":
        from proxy.smtp.relay import SmtpRelay

        return SmtpRelay(settings)
    from proxy.pop3.relay import Pop3Relay

    return Pop3Relay(settings)


@dataclass
class _Listener:
    config: ListenerConfig
    settings: RelaySettings
    env: SessionEnv
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    limit: trio.CapacityLimiter


def tls_paths(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "tls" / "cert.pem", state_dir / "tls" / "key.pem"


def _build(
    lc: ListenerConfig,
    config: Config,
    secrets: Secrets,
    state_dir: Path,
    service: ProxyService,
    limit: trio.CapacityLimiter,
) -> _Listener:
    lim = config.limits
    password = secrets.target_password(lc.name)
    if lc.target_user and password is None:
        raise ProxyError(
            f"listener {lc.name}: target_user is set but secrets.toml has no target_password for it"
        )
    settings = RelaySettings(
        hostname=config.hostname,
        client_tls=lc.client_tls,
        target_tls=lc.target_tls,
        target_user=lc.target_user,
        target_password=password if lc.target_user else None,
        on_archive_failure=config.on_archive_failure,
        max_line_length=lim.max_line_length,
        max_message_size=lim.max_message_size,
        max_commands=lim.max_commands,
    )
    server_ctx = None
    if lc.client_tls != "none":
        server_ctx = server_context(*tls_paths(state_dir))
    upstream_ctx = None
    if lc.target_tls != "none":
        upstream_ctx = upstream_context(lc.target_verify, lc.target_ca)
    env = SessionEnv(
        listener=lc.name,
        protocol=lc.protocol,
        target_host=lc.target_host,
        target_port=lc.upstream_port,
        target_tls=lc.target_tls,
        client_tls=lc.client_tls,
        spool=Spool(state_dir / "reports"),
        connect_timeout=lim.connect_timeout,
        idle_timeout=lim.idle_timeout,
        upstream_timeout=lim.upstream_timeout,
        min_data_rate=lim.min_data_rate,
        max_session_time=lim.max_session_time,
        server_ctx=server_ctx,
        upstream_ctx=upstream_ctx,
        stats=service.stats,
    )
    return _Listener(lc, settings, env, config.allowed_networks(), limit)


def _bind_key(lc: ListenerConfig) -> tuple[str, int]:
    return lc.listen, lc.bind_port


def _global_key(config: Config) -> tuple[Any, ...]:
    """The settings outside `[[listener]]` that every listener's sessions depend on."""
    return (config.hostname, config.on_archive_failure, tuple(config.allow_clients), config.limits)


@dataclass
class _Port:
    """One bound listener: its sockets, the cancel scope of its accept loop, and the
    `_Listener` that new connections get (swapped in place by a reload)."""

    current: _Listener
    sockets: list[trio.SocketListener]
    scope: trio.CancelScope
    port: int

    @property
    def bind(self) -> tuple[str, int]:
        return _bind_key(self.current.config)


@dataclass
class ProxyService:
    """What a running proxy exposes to tests, `status` and the control socket.

    Sessions run in the service nursery, not under their listener's accept loop, so a
    reload that stops accepting on a listener lets its sessions in flight finish.
    """

    config: Config
    secrets: Secrets
    state_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    reloads: int = 0
    last_reload: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    _limit: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    _bound: dict[str, _Port] = field(default_factory=dict)
    _nursery: trio.Nursery | None = None
    _reload_lock: trio.Lock = field(default_factory=trio.Lock)

    # --- listeners -----------------------------------------------------------------
    def _start(self, lst: _Listener, sockets: list[trio.SocketListener]) -> None:
        assert self._nursery is not None
        name = lst.config.name
        port = _Port(lst, sockets, trio.CancelScope(), sockets[0].socket.getsockname()[1])
        self._bound[name] = port
        self.ports[name] = port.port
        self.active.setdefault(name, 0)
        self._nursery.start_soon(self._accept_loop, port, name=f"accept {name}")
        log.info(
            "listening listener=%s protocol=%s on %s:%d -> %s:%d",
            name,
            lst.config.protocol,
            lst.config.listen,
            port.port,
            lst.config.target_host,
            lst.config.upstream_port,
        )

    async def _accept_loop(self, port: _Port) -> None:
        assert self._nursery is not None
        with port.scope:
            try:
                await trio.serve_listeners(
                    partial(_handle, port, self), port.sockets, handler_nursery=self._nursery
                )
            except* (trio.ClosedResourceError, OSError):
                if not port.scope.cancel_called:
                    raise
        for sock in port.sockets:
            await trio.aclose_forcefully(sock)

    def _stop(self, name: str) -> None:
        """Stop accepting on `name` now (its port is free on return); sessions go on."""
        port = self._bound.pop(name)
        self.ports.pop(name, None)
        port.scope.cancel()
        for sock in port.sockets:
            sock.socket.close()  # synchronous: a rebind of the same address may follow
        if not self.active.get(name):
            self.active.pop(name, None)
        log.info("stopped listening listener=%s port=%d", name, port.port)

    async def reload(self, config: Config, secrets: Secrets) -> dict[str, Any]:
        """Apply a new configuration without dropping sessions in flight.

        Every listener is rebuilt first (a bad certificate or a missing password raises
        before anything changes). Then: removed listeners stop accepting; listeners whose
        address and port are unchanged keep their socket and give new connections the new
        settings; new listeners, and those whose address or port changed, are bound (a
        bind failure is reported in "errors" and leaves that one listener down).
        """
        async with self._reload_lock:
            built = {
                lc.name: _build(lc, config, secrets, self.state_dir, self, self._limit)
                for lc in config.listener
            }
            if config.state_dir != self.config.state_dir:
                log.warning("reload: a new state_dir takes effect only after a restart")
            result: dict[str, list[str]] = {
                "added": [],
                "removed": [],
                "changed": [],
                "unchanged": [],
                "errors": [],
            }
            self._limit.total_tokens = config.limits.max_connections
            same_globals = _global_key(config) == _global_key(self.config)
            rebind: list[_Listener] = []
            for name in [n for n in self._bound if n not in built]:
                self._stop(name)
                result["removed"].append(name)
            for name, lst in built.items():
                port = self._bound.get(name)
                if port is not None and port.bind == _bind_key(lst.config):
                    same = same_globals and port.current.config == lst.config
                    result["unchanged" if same else "changed"].append(name)
                    port.current = lst  # also picks up a renewed TLS certificate
                    continue
                if port is not None:
                    self._stop(name)
                    result["changed"].append(name)
                else:
                    result["added"].append(name)
                rebind.append(lst)
            for lst in rebind:
                try:
                    sockets = await _open(lst.config)
                except ProxyError as e:
                    log.error("reload: %s", e)
                    result["errors"].append(str(e))
                    continue
                self._start(lst, sockets)
            self.config, self.secrets = config, secrets
            self.reloads += 1
            self.last_reload = {"at": _utc(time.time()), **result}
            log.info(
                "configuration reloaded: added=%s removed=%s changed=%s errors=%d",
                ",".join(result["added"]) or "-",
                ",".join(result["removed"]) or "-",
                ",".join(result["changed"]) or "-",
                len(result["errors"]),
            )
            return result

    def snapshot(self) -> dict[str, Any]:
        """Listeners, sessions and counters (the in-memory part of `status`)."""
        listeners = []
        for name, port in self._bound.items():
            lc = port.current.config
            listeners.append(
                {
                    "name": name,
                    "protocol": lc.protocol,
                    "listen": lc.listen,
                    "port": port.port,
                    "target_host": lc.target_host,
                    "target_port": lc.upstream_port,
                    "client_tls": lc.client_tls,
                    "target_tls": lc.target_tls,
                    "accepting": True,
                    "active_sessions": self.active.get(name, 0),
                }
            )
        draining = {n: c for n, c in self.active.items() if n not in self._bound and c}
        return {
            "pid": os.getpid(),
            "started_at": _utc(self.started_at),
            "listeners": listeners,
            "draining": draining,
            "active_sessions": sum(self.active.values()),
            "archive_failures": self.stats.get("archive_failures", 0),
            "last_archive_error": self.stats.get("last_error"),
            "reloads": self.reloads,
            "last_reload": self.last_reload,
        }


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


async def _open(lc: ListenerConfig) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(lc.bind_port, host=lc.listen)
    except OSError as e:
        raise ProxyError(
            f"listener {lc.name}: cannot listen on {lc.listen}:{lc.bind_port}: {e.strerror}"
        ) from None


async def _handle(port: _Port, service: ProxyService, stream: trio.SocketStream) -> None:
    lst = port.current  # the settings at accept time stay with this session to its end
    name, proto = lst.config.name, lst.config.protocol
    try:
        peer = stream.socket.getpeername()
    except OSError:
        await trio.aclose_forcefully(stream)
        return
    try:
        ip = ipaddress.ip_address(peer[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not any(ip in net for net in lst.networks):
            log.warning("refused client outside allow_clients listener=%s client=%s", name, ip)
            with trio.move_on_after(5):
                await stream.send_all(REFUSED[proto])
            return
        try:
            lst.limit.acquire_nowait()
        except trio.WouldBlock:
            log.warning("connection cap reached listener=%s client=%s", name, ip)
            with trio.move_on_after(5):
                await stream.send_all(BUSY[proto])
            return
        try:
            service.active[name] = service.active.get(name, 0) + 1
            session = Session(lst.env, make_core(proto, lst.settings), stream, peer)
            await session.run()
        finally:
            service.active[name] -= 1
            if not service.active[name] and name not in service._bound:
                del service.active[name]  # a removed listener's last session
            lst.limit.release()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve_listeners(
    config: Config,
    secrets: Secrets,
    state_dir: Path,
    *,
    task_status: trio.TaskStatus[ProxyService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every listener and serve until cancelled; `started()` gets the service."""
    (state_dir / "reports").mkdir(parents=True, exist_ok=True)
    service = ProxyService(config, secrets, state_dir)
    service._limit = trio.CapacityLimiter(config.limits.max_connections)
    built = [
        _build(lc, config, secrets, state_dir, service, service._limit) for lc in config.listener
    ]
    bound: list[tuple[_Listener, list[trio.SocketListener]]] = []
    try:
        for lst in built:
            bound.append((lst, await _open(lst.config)))
    except BaseException:
        for _, sockets in bound:
            for sock in sockets:
                sock.socket.close()
        raise
    async with trio.open_nursery() as nursery:
        service._nursery = nursery
        for lst, sockets in bound:
            service._start(lst, sockets)
        nursery.start_soon(trio.sleep_forever)  # serve on even when a reload removes all
        memory.configure()
        nursery.start_soon(memory.trim_loop)  # RSS follows the live sessions (memory.py)
        task_status.started(service)


# --- the service (`proxy-admin run`) ----------------------------------------------------


def _disk_free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


async def service_status(
    service: ProxyService, alerter: Alerter, config_path: Path
) -> dict[str, Any]:
    """The full `status` answer of the control socket (file-system parts in a thread)."""
    state = service.state_dir
    pending = await trio.to_thread.run_sync(backlog, state)
    free = await trio.to_thread.run_sync(_disk_free, state)
    alerts_cfg = service.config.alerts
    return {
        **service.snapshot(),
        "config": str(config_path),
        "state_dir": str(state),
        "reports_pending": pending,
        "disk_free_bytes": free,
        "low_disk_mb": alerts_cfg.low_disk_mb,
        "last_errors": list(alerter.recent),
        "alerts": {
            "mail": alerts_cfg.mail_enabled,
            "mailed": alerter.mailed,
            "mail_failures": alerter.mail_failures,
        },
    }


def _load(config_path: Path) -> tuple[Config, Secrets]:
    config = load_config(config_path)
    secrets = load_secrets(config_path, strict_mode=True)
    check_secrets(config, secrets)
    return config, secrets


async def reload_from_disk(
    service: ProxyService, alerter: Alerter, config_path: Path
) -> dict[str, Any]:
    """SIGHUP / `reload` on the control socket: re-read config.toml and secrets.toml.

    A config that does not load or apply leaves the running configuration in place.
    """
    monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")
    try:
        config, secrets = await trio.to_thread.run_sync(_load, config_path)
        result = await service.reload(config, secrets)
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


def describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e) or type(e).__name__


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
    task_status: trio.TaskStatus[ProxyService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The foreground service (`proxy-admin run`): listeners, control socket, alerts,
    sd_notify, demo provider, ingest. SIGHUP reloads; SIGTERM/SIGINT stop."""
    state = resolve_state_dir(config, config_path)
    spool = Spool(state / "reports")
    (state / "reports").mkdir(parents=True, exist_ok=True)
    for orphan in spool.cleanup_orphans():
        log.warning("removed unfinished report file from an earlier crash: %s", orphan.name)
    demo = None
    if config.demo.enabled:
        from admin.demo_provider import DemoProvider

        demo = DemoProvider(state / "demo", config.demo.smtp_port, config.demo.pop3_port)
        demo.start()
        log.info(
            "demo provider: smtp 127.0.0.1:%d pop3 127.0.0.1:%d, mailboxes in %s",
            config.demo.smtp_port,
            config.demo.pop3_port,
            state / "demo",
        )
    alerter = Alerter(config.alerts, config.hostname)
    try:
        async with trio.open_nursery() as nursery:
            # Open the signal receiver first: a SIGHUP right after READY=1 is not lost.
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                service: ProxyService = await nursery.start(serve_listeners, config, secrets, state)
                nursery.start_soon(alerter.run)
                nursery.start_soon(watch_stats, alerter, service.stats)
                nursery.start_soon(watch_disk, alerter, state)
                try:
                    from archive.ingest import ingest_loop
                except ImportError:
                    ingest_loop = None
                if ingest_loop is not None:
                    nursery.start_soon(ingest_loop, state)
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
