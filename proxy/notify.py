"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET per state change.

The protocol (sd_notify(3)) is a UNIX datagram of newline-separated `KEY=VALUE` lines sent
to the path in $NOTIFY_SOCKET; a leading `@` names a socket in the abstract namespace.
Without $NOTIFY_SOCKET (not under systemd, or not Type=notify) every call is a no-op.
mailtee sends READY=1 once the listeners are bound, WATCHDOG=1 at half of
$WATCHDOG_USEC while the loop is alive, RELOADING=1/READY=1 around a reload and
STOPPING=1 on shutdown. Sending never blocks: a full receive queue drops the datagram.
"""

from __future__ import annotations

import logging
import os
import socket

import trio

log = logging.getLogger("mailtee.notify")


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*lines: str, environ: dict[str, str] | None = None) -> bool:
    """Send `lines` (e.g. "READY=1") to systemd; False when there is no socket or it failed."""
    env = os.environ if environ is None else environ
    target = env.get("NOTIFY_SOCKET")
    if not target or not lines:
        return False
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(payload, _address(target))
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", target, e.strerror or e)
        return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None if not asked."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec or not env.get("NOTIFY_SOCKET"):
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog is meant for another process (sd_watchdog_enabled(3))
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None


async def watchdog_loop(environ: dict[str, str] | None = None) -> None:
    """Ping the watchdog until cancelled; returns at once when no watchdog is configured."""
    interval = watchdog_interval(environ)
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1", environ=environ)
        await trio.sleep(interval)
