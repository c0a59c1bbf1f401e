"""The control socket (proxy.control) and `proxy-admin status` through it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from admin.cli import app
from admin.config import Config, ListenerConfig, Secrets, save_config
from fixtures.smtp_clients import smtp_wire
from proxy import control
from proxy.service import run_service


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def echo(request):
    return {"ok": True, "you_said": request["command"]}


async def ask(path: Path, command: str) -> dict:
    return await trio.to_thread.run_sync(control.request, path, command)


async def test_socket_is_0600_answers_json_and_is_removed(short_dir, nursery):
    path = short_dir / "control.sock"
    path.write_text("stale")  # left over by a crash: replaced
    scope = trio.CancelScope()

    async def serve(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await control.serve(path, echo, task_status=task_status)

    await nursery.start(serve)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert [p.name for p in short_dir.iterdir()] == ["control.sock"]  # no temp name left
    assert await ask(path, "status") == {"ok": True, "you_said": "status"}
    scope.cancel()
    await trio.sleep(0.05)
    assert not path.exists()


async def test_bad_requests_get_an_error_reply(short_dir, nursery):
    path = short_dir / "control.sock"
    await nursery.start(control.serve, path, echo)

    def raw(data: bytes) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(data)
            return json.loads(s.makefile("rb").readline())

    for data in (b"not json\n", b"[1, 2]\n", b'{"cmd": "status"}\n'):
        reply = await trio.to_thread.run_sync(raw, data)
        assert reply["ok"] is False and reply["error"].startswith("bad request"), reply


def test_request_without_a_service(short_dir):
    with pytest.raises(FileNotFoundError):
        control.request(short_dir / "control.sock", "status")


def _config(state: Path, up_port: int) -> tuple[Config, Path]:
    lc = ListenerConfig(name="smtp", protocol="smtp", listen="127.0.0.1", port=0,
                        target_host="127.0.0.1", target_port=up_port)  # fmt: skip
    config = Config(hostname="mailtee.test", state_dir=str(state), listener=[lc])
    path = state / "config.toml"
    save_config(config, path)
    return config, path


async def test_status_over_the_service_socket(smtp_upstream, short_dir, nursery):
    up = smtp_upstream()
    config, path = _config(short_dir, up.port)
    service = await nursery.start(run_service, config, Secrets(), path)
    (
        short_dir / "reports" / "20261126T101500Z-smtp-0b5c9a52-4a5d-4c1e-9e0c-1f2a3b4c5d6e.mpr"
    ).write_text("{}")  # one report waiting
    async with smtp_wire(service.ports["smtp"]) as w:  # one session in flight
        assert (await w.read_reply())[0] == 220
        reply = await ask(short_dir / "control.sock", "status")
        assert reply["ok"] is True
        st = reply["status"]
        assert st["active_sessions"] == 1
        [lst] = st["listeners"]
        assert lst["name"] == "smtp" and lst["port"] == service.ports["smtp"]
        assert lst["active_sessions"] == 1 and lst["accepting"] is True
        assert lst["target_port"] == up.port
        assert st["pid"] == os.getpid()
        assert st["reports_pending"] == 1
        assert isinstance(st["disk_free_bytes"], int) and st["disk_free_bytes"] > 0
        assert st["last_errors"] == [] and st["archive_failures"] == 0
        assert st["config"] == str(path) and st["state_dir"] == str(short_dir)

        # `proxy-admin status` uses the socket while the service runs
        def cli(*args):
            return CliRunner().invoke(app, ["--config", str(path), "status", *args])

        r = await trio.to_thread.run_sync(cli, "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["service"]["running"] is True
        assert doc["service"]["active_sessions"] == 1
        assert doc["reports_pending"] == 1
        assert doc["listeners"][0]["accepting"] is True
        assert doc["listeners"][0]["active_sessions"] == 1
        assert list(doc) == sorted(doc)
        r = await trio.to_thread.run_sync(cli)
        assert r.exit_code == 0, r.output
        assert f"running (pid {os.getpid()}, since " in r.stdout
        assert "1 active" in r.stdout
        await w.command(b"QUIT")


async def test_reload_over_the_socket(smtp_upstream, short_dir, nursery):
    up = smtp_upstream()
    config, path = _config(short_dir, up.port)
    service = await nursery.start(run_service, config, Secrets(), path)
    extra = config.listener[0].model_copy(update={"name": "extra"})
    save_config(config.model_copy(update={"listener": [config.listener[0], extra]}), path)
    reply = await ask(short_dir / "control.sock", "reload")
    assert reply["ok"] is True and reply["reload"]["added"] == ["extra"], reply
    assert "extra" in service.ports
    reply = await ask(short_dir / "control.sock", "explode")
    assert reply == {"ok": False, "error": "unknown command 'explode' (status, reload)"}


def test_cli_status_without_a_service_says_so(short_dir):
    _, path = _config(short_dir, 9)
    r = CliRunner().invoke(app, ["--config", str(path), "status", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["service"] == {"running": False}
    r = CliRunner().invoke(app, ["--config", str(path), "status"])
    assert "service:" in r.stdout and "not running" in r.stdout
