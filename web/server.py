"""Serve the web app over HTTPS with the appliance certificate (Hypercorn on Trio).

The certificate is the one the mail listeners use, `state_dir/tls/cert.pem` and
`key.pem` (`proxy-admin tls self-signed|import`). TLS 1.2+ (Hypercorn's context), HTTP/1.1
and HTTP/2. Hypercorn's access log stays off: searches are personal and every person's
access is in the audit log instead. Timeouts and header caps bound what a client holds.
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve

from admin.config import Config, Secrets
from admin.config import state_dir as resolve_state_dir
from web.errors import WebError

from .app import create_app

log = logging.getLogger("mailtee.web")


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def hypercorn_config(config: Config, state: Path) -> HyperConfig:
    cert, key = state / "tls" / "cert.pem", state / "tls" / "key.pem"
    for path in (cert, key):
        if not path.is_file():
            raise WebError(
                f"{path}: missing; the web side serves HTTPS with the appliance certificate "
                "(create one with `proxy-admin tls self-signed`)"
            )
    hc = HyperConfig()
    # Our own socket: SO_REUSEPORT lets the service's web workers share the port (the
    # kernel spreads connections over them).
    sock = listening_socket(config.web.listen, config.web.port)
    hc.bind = [f"fd://{sock.detach()}"]
    hc.certfile, hc.keyfile = str(cert), str(key)
    hc.accesslog = None
    hc.errorlog = logging.getLogger("mailtee.web.http")
    hc.keep_alive_timeout = 30
    hc.read_timeout = 60
    hc.ssl_handshake_timeout = 30
    hc.graceful_timeout = 5
    hc.h11_max_incomplete_size = 32 * 1024
    hc.h2_max_concurrent_streams = 50
    hc.include_server_header = False
    return hc


async def serve(
    config: Config,
    secrets: Secrets,
    config_path: Path,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT; `task_status.started` gets the bound URLs."""
    state = resolve_state_dir(config, config_path)
    hc = hypercorn_config(config, state)
    app = create_app(config, secrets, state)
    stop = trio.Event()

    async def on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async for _ in sigs:
                stop.set()
                return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            urls = await nursery.start(
                lambda task_status: hyper_serve(
                    app, hc, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            log.info("web: serving %s", " ".join(urls))
            print(f"mailtee web listening on {' '.join(urls)}", flush=True)
            task_status.started(urls)
            await stop.wait()
            nursery.cancel_scope.deadline = trio.current_time() + hc.graceful_timeout + 1
    finally:
        app.state.web.archive.close_quietly()
        app.state.web.audit_catalog.close()
        app.state.web.sessions.db.close()
