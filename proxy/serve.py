"""Listeners: accept loops, the client allow-list, the connection cap, and the service.

One `trio.serve_listeners` per configured listener runs in the service nursery (it logs
and retries EMFILE instead of dying). Each connection is checked against
`allow_clients` (DESIGN invariant 4: never an open relay) and the connection cap
before any byte reaches the provider, then handed to a `Session`.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import Config, ListenerConfig, Secrets
from archive.spool import Spool
from proxy.actions import RelayCore
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
class ProxyService:
    """What a running proxy exposes to tests, `status` and the control socket."""

    ports: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


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
        server_ctx=server_ctx,
        upstream_ctx=upstream_ctx,
        stats=service.stats,
    )
    return _Listener(lc, settings, env, config.allowed_networks(), limit)


async def _handle(lst: _Listener, service: ProxyService, stream: trio.SocketStream) -> None:
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
    service = ProxyService()
    limit = trio.CapacityLimiter(config.limits.max_connections)
    bound: list[tuple[_Listener, list[trio.SocketListener]]] = []
    for lc in config.listener:
        lst = _build(lc, config, secrets, state_dir, service, limit)
        try:
            listeners = await trio.open_tcp_listeners(lc.bind_port, host=lc.listen)
        except OSError as e:
            raise ProxyError(
                f"listener {lc.name}: cannot listen on {lc.listen}:{lc.bind_port}: {e.strerror}"
            ) from None
        service.ports[lc.name] = listeners[0].socket.getsockname()[1]
        service.active[lc.name] = 0
        bound.append((lst, listeners))
    async with trio.open_nursery() as nursery:
        for lst, listeners in bound:
            nursery.start_soon(trio.serve_listeners, partial(_handle, lst, service), listeners)
            log.info(
                "listening listener=%s protocol=%s on %s:%d -> %s:%d",
                lst.config.name,
                lst.config.protocol,
                lst.config.listen,
                service.ports[lst.config.name],
                lst.config.target_host,
                lst.config.upstream_port,
            )
        task_status.started(service)


async def run_service(config: Config, secrets: Secrets, config_path: Path) -> None:
    """The foreground service (`proxy-admin run`): listeners, demo provider, ingest."""
    from admin.config import state_dir as resolve_state_dir

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
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_listeners, config, secrets, state)
            try:
                from archive.ingest import ingest_loop
            except ImportError:
                ingest_loop = None
            if ingest_loop is not None:
                nursery.start_soon(ingest_loop, state)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                log.info("mailtee running; state in %s", state)
                async for sig in sigs:
                    if sig == signal.SIGHUP:
                        log.warning("SIGHUP: configuration reload is not implemented yet")
                        continue
                    log.info("stopping on %s", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    break
    finally:
        if demo is not None:
            demo.stop()
