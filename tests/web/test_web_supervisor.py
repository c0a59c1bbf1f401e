"""`proxy-admin run` with `[web] enabled = true`: the web side is a supervised child; killing
it does not stop relaying, and it comes back."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio
from web_helpers import Client, build_state, free_port

from admin.config import load_config, load_secrets
from fixtures import mails
from fixtures.smtp_clients import smtplib_session
from proxy.service import run_service

pytestmark = pytest.mark.e2e

GIVE_UP = 60.0  # seconds; a limit for a hung test, not a pass/fail threshold


def web_children(config_path: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config_path).encode() in cmd and b"web" in cmd and b"serve" in cmd:
            pids.append(int(entry))
    return pids


async def wait_listening(port: int) -> None:
    with trio.fail_after(GIVE_UP):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def test_a_crash_of_the_web_side_does_not_stop_relaying(smtp_upstream, ca, ca_file, tmp_path):  # type: ignore[no-untyped-def]
    up = smtp_upstream()
    listener = {
        "name": "smtp",
        "protocol": "smtp",
        "listen": "127.0.0.1",
        "port": free_port(),
        "target_host": "127.0.0.1",
        "target_port": up.port,
    }
    config_path, _state, web_port, _ids = await trio.to_thread.run_sync(
        lambda: build_state(tmp_path, ca, {}, {"listener": [listener]})
    )
    config = load_config(config_path)
    async with trio.open_nursery() as nursery:
        service = await nursery.start(run_service, config, load_secrets(config_path), config_path)
        await _crash_and_recover(service, config_path, web_port)
        page = await trio.to_thread.run_sync(_admin_status, web_port, ca_file)
        assert "smtp" in page and f"127.0.0.1:{service.ports['smtp']}" in page, page
        nursery.cancel_scope.cancel()
    with trio.fail_after(GIVE_UP):  # the service took its child down with it
        while web_children(config_path):  # noqa: ASYNC110 - polls /proc
            await trio.sleep(0.05)


def _admin_status(port: int, ca_file: Path) -> str:
    """The admin status page as root sees it: what the service says on its control socket."""
    client = Client(port, ca_file)
    assert client.login("root").status == 303
    return client.get("/admin/status").text


async def _crash_and_recover(service, config_path: Path, web_port: int) -> None:  # type: ignore[no-untyped-def]
    await wait_listening(web_port)
    with trio.fail_after(GIVE_UP):
        while len(workers := web_children(config_path)) < 2:  # noqa: ASYNC110 - 2 workers
            await trio.sleep(0.05)
    first = workers[0]
    os.kill(first, signal.SIGKILL)

    res = await smtplib_session(service.ports["smtp"], [mails.plain(1)])
    assert res.transactions[0].data[0] == 250, res  # relaying goes on without the web side

    with trio.fail_after(GIVE_UP):
        while True:
            again = [p for p in web_children(config_path) if p != first]
            if len(again) == 2:
                break
            await trio.sleep(0.05)
    await wait_listening(web_port)


# --- how an ended child is reported (a stand-in child instead of the web side) ---------


def _child_exiting(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    import sys

    from web import supervisor

    script = f"import sys; sys.exit({code})"
    monkeypatch.setattr(supervisor, "command", lambda _path: [sys.executable, "-c", script])
    monkeypatch.setattr(supervisor, "MIN_BACKOFF", 0.01)


async def test_a_crashed_child_is_reported_at_once(monkeypatch, caplog, tmp_path):  # type: ignore[no-untyped-def]
    from web import supervisor

    _child_exiting(monkeypatch, 3)
    monkeypatch.setattr(supervisor, "STOP_GRACE", GIVE_UP)  # would hang if it waited
    with trio.fail_after(GIVE_UP):
        await supervisor._keep_running(tmp_path / "config.toml", 1, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "web: web worker 1 exited (status 3); relaying continues, restarting in 0 s",
        "web: web worker 1 exited (status 3); relaying continues, restarting in 0 s",
    ], errors


async def test_a_child_that_ends_as_a_stop_does_is_still_reported_when_no_stop_follows(  # type: ignore[no-untyped-def]
    monkeypatch, caplog, tmp_path
):
    from web import supervisor

    _child_exiting(monkeypatch, 0)
    monkeypatch.setattr(supervisor, "STOP_GRACE", 0.05)
    with trio.fail_after(GIVE_UP):
        await supervisor._keep_running(tmp_path / "config.toml", 1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "web: web worker 1 exited (status 0); relaying continues, restarting in 0 s"
    ], errors


async def test_a_child_stopped_with_the_service_is_not_an_error(monkeypatch, caplog, tmp_path):  # type: ignore[no-untyped-def]
    """Ctrl-C or systemd's stop signals the child and the service at once; the child may
    end first. The service's stop (here: the cancel) then comes within STOP_GRACE."""
    from web import supervisor

    # the child ends by SIGTERM, as a stopped web worker does; its $0 is `marker`, which
    # it creates first, so the test can tell that it has been and gone
    marker = tmp_path / "child-ran"
    script = 'touch "$0"; kill -TERM $$'
    monkeypatch.setattr(supervisor, "command", lambda _path: ["/bin/sh", "-c", script, str(marker)])
    monkeypatch.setattr(supervisor, "STOP_GRACE", GIVE_UP)
    with trio.fail_after(GIVE_UP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor._keep_running, tmp_path / "config.toml", 1, None)
            # the child has run and ended: the supervisor is past it, in the grace
            while not marker.exists() or _running_with(str(marker)):  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records


def _running_with(arg: str) -> bool:
    """Some live process has `arg` on its command line."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if arg.encode() in cmd:
                return True
    return False


async def test_a_child_outlives_the_thread_pool_that_started_it(monkeypatch, caplog, tmp_path):  # type: ignore[no-untyped-def]
    """PR_SET_PDEATHSIG fires when the *thread* that forked the child exits. A child
    forked from one of Trio's worker threads (trio.run_process forks there) got its
    SIGTERM when that thread had idled for 10 s: every web child stopped 10 s after it
    started, and came back after a growing pause. The pool's idle time is shortened here
    so that its threads exit within the test."""
    from trio._core import _thread_cache

    from web import supervisor

    marker = str(tmp_path / "web-child")
    script = "import sys, time; time.sleep(60)"
    monkeypatch.setattr(supervisor, "command", lambda _path: [sys.executable, "-c", script, marker])
    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
    with trio.fail_after(GIVE_UP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor._keep_running, tmp_path / "config.toml", 1, None)
            while not _running_with(marker):  # noqa: ASYNC110 - polls /proc
                await trio.sleep(0.01)
            for _ in range(5):  # threads that ran (or could have run) the fork now idle out
                await trio.to_thread.run_sync(lambda: None)
                await trio.sleep(0.2)
            assert _running_with(marker), "the web child was stopped with an idle thread"
            nursery.cancel_scope.cancel()
        while _running_with(marker):  # noqa: ASYNC110 - the stop takes the child down
            await trio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records
