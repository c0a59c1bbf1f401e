"""Listeners: accept loops, the client allow-list, the connection cap.

Theory of operation. Each configured listener has its own accept loop
(`trio.serve_listeners`, which logs and retries EMFILE instead of dying) inside its own
cancel scope; the sessions it accepts run in the service nursery instead. So a reload
(SIGHUP, `ProxyService.reload`) can stop accepting on a removed or moved listener while
its sessions in flight finish, start accept loops for new ones, and leave the others
alone (new connections on them get the new settings; a session keeps the settings it was
accepted with). Each connection is checked against `allow_clients` (DESIGN invariant 4:
never an open relay) and the connection cap before any byte reaches the provider, then
handed to a `Session`.

`serve_listeners` runs the listeners of one process (the single-process service, or one
worker of proxy.workers); the service around them is proxy.service.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from admin.config import (
    Config,
    ListenerConfig,
    Secrets,
)
from archive.spool import Spool
from archive.timefmt import utc_iso
from proxy import fastsock, memory, reload_diff
from proxy.actions import RelayCore
from proxy.errors import ProxyError
from proxy.fastsock import close_stream
from proxy.session import Session, SessionEnv
from proxy.settings import RelaySettings
from proxy.stats import ServiceStats
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
    #: OAuth2 upstream (target_account/local_login): proxy.oauth_session.OAuthBinding
    oauth: Any = None
    #: client address -> allow_clients verdict (a reload builds a new _Listener)
    allowed_cache: dict[Any, bool] = field(default_factory=dict)


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
        committer=service.committer,
    )
    oauth = None
    if lc.target_account or lc.local_login:
        from proxy.oauth_session import binding_for

        oauth = binding_for(lc, service.tokens, state_dir)
    return _Listener(lc, settings, env, config.allowed_networks(), limit, oauth)


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
    stats: ServiceStats = field(default_factory=ServiceStats)
    reloads: int = 0
    last_reload: dict[str, Any] | None = None
    #: listener name -> why a reload could not bind it (shown by `status`)
    bind_errors: dict[str, str] = field(default_factory=dict)
    #: reload_diff.tls_fingerprint of the client-side certificate, to log its renewal
    tls_fingerprint: str | None = None
    started_at: float = field(default_factory=time.time)
    _limit: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    _bound: dict[str, _Port] = field(default_factory=dict)
    _nursery: trio.Nursery | None = None
    _reload_lock: trio.Lock = field(default_factory=trio.Lock)
    #: OAuth2 access tokens of the [[account]]s (accounts.tokens.TokenManager)
    tokens: Any = None
    #: the group committer of this process (archive.commit)
    committer: Any = None
    #: worker processes (proxy.workers): this one's index, SO_REUSEPORT, and the ports
    #: the supervisor reserved for listeners configured with port 0
    worker: int = 0
    reuse_port: bool = False
    port_map: dict[str, int] = field(default_factory=dict)

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
                await fastsock.serve_listeners(
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
            result: dict[str, Any] = {
                "added": [],
                "removed": [],
                "changed": [],
                "unchanged": [],
                "errors": [],
                "details": {},
                "settings": reload_diff.global_changes(self.config, config),
            }
            fingerprint = await trio.to_thread.run_sync(
                reload_diff.tls_fingerprint, *tls_paths(self.state_dir)
            )
            cert_changed = fingerprint != self.tls_fingerprint
            self.tls_fingerprint = fingerprint
            self._limit.total_tokens = config.limits.max_connections
            same_globals = _global_key(config) == _global_key(self.config)
            rebind: list[_Listener] = []
            for name in [n for n in self._bound if n not in built]:
                self._stop(name)
                result["removed"].append(name)
            self.bind_errors = {n: e for n, e in self.bind_errors.items() if n in built}
            for name, lst in built.items():
                port = self._bound.get(name)
                if port is not None:
                    details = reload_diff.listener_changes(
                        self.config, config, port.current.config, lst.config,
                        port.current.settings.target_password, lst.settings.target_password,
                        cert_changed,
                    )  # fmt: skip
                    if details:
                        result["details"][name] = details
                if port is not None and port.bind == _bind_key(lst.config):
                    same = same_globals and not result["details"].get(name)
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
                    sockets = await self.open(lst.config)
                except ProxyError as e:
                    log.error("reload: %s", e)
                    result["errors"].append(str(e))
                    self.bind_errors[lst.config.name] = str(e)
                    continue
                self.bind_errors.pop(lst.config.name, None)
                self._start(lst, sockets)
            self.config, self.secrets = config, secrets
            if self.tokens is not None:
                self.tokens.configure(config, secrets)
            self.reloads += 1
            self.last_reload = {"at": utc_iso(time.time()), **result}
            log.info(
                "configuration reloaded: added=%s removed=%s changed=%s settings=%s errors=%d",
                ",".join(result["added"]) or "-",
                ",".join(result["removed"]) or "-",
                reload_diff.summary(result["changed"], result["details"]),
                ",".join(result["settings"]) or "-",
                len(result["errors"]),
            )
            return result

    async def open(self, lc: ListenerConfig) -> list[trio.SocketListener]:
        if self.reuse_port:
            return open_shared(lc, self.port_map.get(lc.name, lc.bind_port))
        return await _open(lc)

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
            "started_at": utc_iso(self.started_at),
            "listeners": listeners,
            "configured": [lc.name for lc in self.config.listener],
            "bind_errors": dict(self.bind_errors),
            "draining": draining,
            "active_sessions": sum(self.active.values()),
            "archive_failures": self.stats.archive_failures,
            "last_archive_error": self.stats.last_error,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "accounts": self.tokens.snapshot() if self.tokens is not None else [],
            "commit": self.committer.snapshot() if self.committer is not None else None,
        }


async def _open(lc: ListenerConfig) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(lc.bind_port, host=lc.listen)
    except OSError as e:
        raise ProxyError(
            f"listener {lc.name}: cannot listen on {lc.listen}:{lc.bind_port}: {e.strerror}"
        ) from None


def open_shared(lc: ListenerConfig, port: int) -> list[trio.SocketListener]:
    """Listen with SO_REUSEPORT on `port` (worker processes share the listeners; the
    supervisor holds a bound, non-listening socket on the same port so that no other
    program can take it and port 0 resolves to one number for all workers)."""
    from proxy.ports import bind_reuseport

    try:
        socks = bind_reuseport(lc.listen, port)
        for sock in socks:
            sock.listen(socket_backlog())
    except OSError as e:
        raise ProxyError(
            f"listener {lc.name}: cannot listen on {lc.listen}:{port}: {e.strerror}"
        ) from None
    return [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]


def socket_backlog() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 4096


#: allow_clients verdicts kept per listener (the same few client addresses connect again
#: and again; parsing and matching each one per connection showed in the profile)
ALLOWED_CACHE_MAX = 4096


@functools.lru_cache(maxsize=ALLOWED_CACHE_MAX)
def _client_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip


def _allowed(lst: _Listener, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    verdict = lst.allowed_cache.get(ip)
    if verdict is None:
        verdict = any(ip in net for net in lst.networks)
        if len(lst.allowed_cache) >= ALLOWED_CACHE_MAX:
            lst.allowed_cache.clear()
        lst.allowed_cache[ip] = verdict
    return verdict


async def _handle(port: _Port, service: ProxyService, stream: trio.abc.Stream) -> None:
    lst = port.current  # the settings at accept time stay with this session to its end
    name, proto = lst.config.name, lst.config.protocol
    try:
        peer = stream.socket.getpeername()  # type: ignore[attr-defined]
    except OSError:
        await close_stream(stream)
        return
    try:
        ip = _client_ip(peer[0])
        if not _allowed(lst, ip):
            log.warning("refused client outside allow_clients listener=%s client=%s", name, ip)
            with trio.move_on_after(5):
                await stream.send_all(REFUSED[proto.removesuffix("-journal")])
            return
        try:
            lst.limit.acquire_nowait()
        except trio.WouldBlock:
            log.warning("connection cap reached listener=%s client=%s", name, ip)
            with trio.move_on_after(5):
                await stream.send_all(BUSY[proto.removesuffix("-journal")])
            return
        try:
            service.active[name] = service.active.get(name, 0) + 1
            session: Any
            if proto == "smtp-journal":  # receive only, no upstream (proxy/journal_session.py)
                from proxy.journal_session import JournalSession

                session = JournalSession(lst.config, lst.env, lst.settings, stream, peer)
            elif lst.oauth is not None:
                from proxy.oauth_session import new_session

                session = new_session(lst.oauth, lst.env, lst.settings, stream, peer)
            else:
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
        await close_stream(stream)


async def serve_listeners(
    config: Config,
    secrets: Secrets,
    state_dir: Path,
    *,
    token_store: Any = None,
    worker: int = 0,
    reuse_port: bool = False,
    port_map: dict[str, int] | None = None,
    task_status: trio.TaskStatus[ProxyService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every listener and serve until cancelled; `started()` gets the service.

    `token_store`: the OAuth2 token store (accounts.store.TokenStore; default
    state_dir/tokens.json, for tests -- the service passes the one beside secrets.toml).

    Messages are made durable by a group committer on `state_dir/spool/w<worker>`.
    """
    from accounts.store import TokenStore
    from accounts.tokens import TokenManager
    from archive.commit import GroupCommitter, spool_area

    (state_dir / "reports").mkdir(parents=True, exist_ok=True)
    service = ProxyService(config, secrets, state_dir)
    service.worker, service.reuse_port = worker, reuse_port
    service.port_map = dict(port_map or {})
    service.tokens = TokenManager(
        config, secrets, token_store or TokenStore(state_dir / "tokens.json")
    )
    service.tls_fingerprint = await trio.to_thread.run_sync(
        reload_diff.tls_fingerprint, *tls_paths(state_dir)
    )
    service._limit = trio.CapacityLimiter(config.limits.max_connections)
    committer = GroupCommitter(state_dir / "reports", spool_area(state_dir, worker))
    service.committer = committer
    # one live session: its lone commits may run on the loop (archive.commit)
    committer.lone_session = lambda: sum(service.active.values()) <= 1
    built = [
        _build(lc, config, secrets, state_dir, service, service._limit) for lc in config.listener
    ]
    bound: list[tuple[_Listener, list[trio.SocketListener]]] = []
    try:
        for lst in built:
            bound.append((lst, await service.open(lst.config)))
    except BaseException:
        for _, sockets in bound:
            for sock in sockets:
                sock.socket.close()
        raise
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        service._nursery = nursery
        for lst, sockets in bound:
            service._start(lst, sockets)
        nursery.start_soon(trio.sleep_forever)  # serve on even when a reload removes all
        memory.configure()
        nursery.start_soon(memory.trim_loop)  # RSS follows the live sessions (memory.py)
        memory.settle_collector()  # start-up is done: its objects need no more scans
        task_status.started(service)
