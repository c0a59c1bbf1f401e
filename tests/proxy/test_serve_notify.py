"""sd_notify (proxy.notify) against a real UNIX datagram socket, and the service's use of it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from admin.config import Config, ListenerConfig, Secrets, save_config
from proxy import notify
from proxy.service import run_service


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(short_dir / "notify")
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notify_sends_one_datagram(receiver):
    sock, path = receiver
    assert notify.notify("READY=1", "STATUS=serving", environ={"NOTIFY_SOCKET": path})
    assert received(sock) == ["READY=1\nSTATUS=serving"]


def test_notify_abstract_namespace():
    name = f"mailtee-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(1)
        assert notify.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"


def test_notify_without_socket_is_a_no_op():
    assert notify.notify("READY=1", environ={}) is False


def test_notify_to_a_missing_socket_fails_quietly(short_dir, caplog):
    assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": str(short_dir / "nope")}) is False
    assert "sd_notify" in caplog.text


def test_watchdog_interval_is_half_of_watchdog_usec():
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert notify.watchdog_interval(env) == 15.0
    assert notify.watchdog_interval({**env, "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert notify.watchdog_interval({**env, "WATCHDOG_PID": "1"}) is None  # not for us
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) is None
    assert notify.watchdog_interval({**env, "WATCHDOG_USEC": "junk"}) is None


async def test_watchdog_loop_pings_at_half_the_interval(receiver, autojump_clock):
    sock, path = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}
    with trio.move_on_after(12):  # pings at 0, 5, 10 (virtual seconds)
        await notify.watchdog_loop(env)
    assert received(sock) == ["WATCHDOG=1"] * 3


async def test_watchdog_loop_without_watchdog_returns():
    with trio.fail_after(1):
        await notify.watchdog_loop({})


async def test_service_notifies_ready_reloading_and_stopping(
    receiver, short_dir, nursery, monkeypatch
):
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    lc = ListenerConfig(name="smtp", protocol="smtp", listen="127.0.0.1", port=0,
                        target_host="127.0.0.1", target_port=9)  # fmt: skip
    config = Config(state_dir=str(short_dir / "state"), listener=[lc])
    save_config(config, short_dir / "config.toml")
    # run_service reports the service only after READY=1 was sent
    service = await nursery.start(_started, config, short_dir / "config.toml")
    msgs = received(sock)
    assert msgs == ["READY=1\nSTATUS=serving 1 listener(s)"], msgs
    assert service.ports["smtp"] > 0
    os.kill(os.getpid(), signal.SIGHUP)
    with trio.fail_after(5):
        while service.reloads == 0:  # noqa: ASYNC110
            await trio.sleep(0.01)
    msgs = received(sock)
    assert msgs[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and msgs[1:] == ["READY=1"]
    os.kill(os.getpid(), signal.SIGTERM)
    with trio.fail_after(5):
        while not (msgs := received(sock)):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert msgs == ["STOPPING=1"]


async def _started(config, config_path, *, task_status=trio.TASK_STATUS_IGNORED):
    await run_service(config, Secrets(), config_path, task_status=task_status)
