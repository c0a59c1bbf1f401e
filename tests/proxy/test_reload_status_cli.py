"""`proxy-admin reload` and `status` against a running service (issue 10 items 12, 16).

- a listener whose port another program holds is shown as not accepting, with the bind
  error, instead of "yes" (the port does accept -- but not for mailtee);
- the reload names every change, a new provider password and a renewed certificate
  included, without showing the password.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from admin import tls_certs
from admin.cli import app
from admin.config import Config, ListenerConfig, Secrets, save_config, save_secrets
from proxy.service import run_service

OLD_PASSWORD = "old-Secret-1"
NEW_PASSWORD = "new-Secret-2"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _listener(name: str, up_port: int, **fields) -> ListenerConfig:
    return ListenerConfig(name=name, protocol="smtp", listen="127.0.0.1", port=0,
                          target_host="127.0.0.1", target_port=up_port, **fields)  # fmt: skip


def _cli(path: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["--config", str(path), *args])


async def test_reload_names_every_change_and_status_shows_a_failed_bind(
    smtp_upstream, short_dir, nursery, caplog
):
    up = smtp_upstream()
    cert, key = tls_certs.server_context_paths(short_dir)
    cert.parent.mkdir(mode=0o700)
    tls_certs.make_self_signed("mailtee.test", cert, key)
    listeners = [
        _listener("plain", up.port),
        _listener("auth", up.port, target_user="me@example.net"),
        _listener("tls", up.port, client_tls="starttls"),
    ]
    config = Config(hostname="mailtee.test", state_dir=str(short_dir), listener=listeners)
    path = short_dir / "config.toml"
    save_config(config, path)
    save_secrets(Secrets(listener={"auth": {"target_password": OLD_PASSWORD}}), path)
    await nursery.start(run_service, config, Secrets(listener={"auth": {
        "target_password": OLD_PASSWORD}}), path)  # fmt: skip

    other = socket.socket()  # "another program" owns this port
    other.bind(("127.0.0.1", 0))
    other.listen()
    taken = other.getsockname()[1]
    try:
        config.listener = [*listeners, ListenerConfig(
            name="taken", protocol="pop3", listen="127.0.0.1", port=taken,
            target_host="127.0.0.1", target_port=up.port)]  # fmt: skip
        save_config(config, path)
        save_secrets(Secrets(listener={"auth": {"target_password": NEW_PASSWORD}}), path)
        tls_certs.make_self_signed("mailtee.test", cert, key)  # renewed

        caplog.set_level(logging.INFO, logger="mailtee.serve")
        r = await trio.to_thread.run_sync(_cli, path, "reload")
        assert r.exit_code == 1, r.output  # one listener could not be started
        assert "added:     taken" in r.stdout
        assert "auth(target_password)" in r.stdout and "tls(certificate)" in r.stdout
        assert "unchanged: plain" in r.stdout
        assert "taken" in r.stderr and "in use" in r.stderr
        line = next(m for m in caplog.messages if m.startswith("configuration reloaded"))
        assert "changed=auth(target_password),tls(certificate)" in line
        assert NEW_PASSWORD not in caplog.text and OLD_PASSWORD not in caplog.text
        assert NEW_PASSWORD not in r.output

        r = await trio.to_thread.run_sync(_cli, path, "status", "--json")
        assert r.exit_code == 0, r.output
        doc = {x["name"]: x for x in json.loads(r.stdout)["listeners"]}
        assert doc["taken"]["accepting"] is False
        assert "in use" in doc["taken"]["error"]
        assert all(doc[n]["accepting"] is True for n in ("plain", "auth", "tls"))
        table = await trio.to_thread.run_sync(_cli, path, "status")
        rows = {ln.split()[0]: ln for ln in table.stdout.splitlines() if ln.strip()}
        assert rows["taken"].split()[-1] == "no" and rows["plain"].split()[-1] == "yes"
        assert any(ln.startswith("listener taken: ") for ln in table.stdout.splitlines())

        # a reload with nothing changed says so
        r = await trio.to_thread.run_sync(_cli, path, "reload", "--json")
        doc = json.loads(r.stdout)
        assert doc["reload"]["changed"] == [] and doc["reload"]["details"] == {}
    finally:
        other.close()


def test_reload_without_a_service_is_one_line(short_dir: Path) -> None:
    path = short_dir / "config.toml"
    save_config(Config(state_dir=str(short_dir)), path)
    r = _cli(path, "reload")
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "not running" in lines[0] and "systemctl start" in lines[0]
