"""The control socket: `state_dir/control.sock`, a UNIX stream socket, mode 0600.

Protocol: the client sends one JSON object on one line, `{"command": "status"}` or
`{"command": "reload"}`, and reads one JSON object on one line back, then the server
closes. Replies are `{"ok": true, ...}` or `{"ok": false, "error": "one line"}`.
Only the service's own user (and root) can connect: the socket is bound under a
temporary name, chmod'ed to 0600 and only then renamed into place, so there is no
moment at which anybody else could connect.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from proxy.errors import ProxyError

log = logging.getLogger("mailtee.control")

SOCKET_NAME = "control.sock"
#: a request is one short JSON line; anything longer is not a client of ours
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 5.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(ProxyError):
    """The control socket could not be reached or answered nonsense."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


async def bind(path: Path) -> trio.SocketListener:
    """Listen on `path` with mode 0600, replacing a stale socket from an earlier run."""
    tmp = path.with_name(f".c{os.getpid()}")  # no longer than the final name
    tmp.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        sock.listen(16)
        os.replace(tmp, path)
    except BaseException:
        sock.close()
        tmp.unlink(missing_ok=True)
        raise
    return trio.SocketListener(sock)


async def _read_line(stream: trio.abc.Stream) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too long")
    return buf.split(b"\n", 1)[0]


async def _serve_one(handler: Handler, stream: trio.abc.Stream) -> None:
    try:
        reply: dict[str, Any]
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                request = json.loads(await _read_line(stream))
                if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                    raise ValueError('expected {"command": ...}')
            except (ValueError, UnicodeDecodeError) as e:
                reply = {"ok": False, "error": f"bad request: {e}"}
            else:
                reply = await handler(request)
            await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve(
    path: Path,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests on `path` until cancelled, then remove the socket."""
    listener = await bind(path)
    ino = os.stat(path).st_ino
    try:
        task_status.started(path)
        await trio.serve_listeners(
            lambda s: _serve_one(handler, s),  # type: ignore[arg-type]  # a SocketStream
            [listener],
        )
    finally:
        _remove_if_ours(path, ino)


def _remove_if_ours(path: Path, ino: int) -> None:
    try:
        if os.stat(path).st_ino == ino:  # still ours, not a newer instance's
            os.unlink(path)
    except OSError:
        pass


def request(path: Path, command: str, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Blocking client (for `proxy-admin`): send one command, return the reply object.

    Raises FileNotFoundError / ConnectionRefusedError when no service is listening, and
    ControlError when the service answers something that is not a reply.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except (ValueError, UnicodeDecodeError):
        raise ControlError(f"{path}: the service sent an unreadable reply") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: the service sent an unreadable reply")
    return reply
