"""proxy-admin: help, init, status, run and the error conventions (in-process runner)."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from admin_cli_helpers import Cli, assert_one_line_error
from cryptography import x509
from typer.core import TyperGroup

import admin.cli as cli_module
from admin.cli import app
from admin.config import Config, Secrets, load_config

MY_GROUPS = {"listener", "tls"}
MY_COMMANDS = {"init", "run", "status"}


def walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    if isinstance(cmd, TyperGroup):
        for name, sub in cmd.commands.items():
            yield from walk(sub, (*path, name))


def all_commands() -> list[tuple[tuple[str, ...], Any]]:
    return list(walk(typer.main.get_command(app)))


def test_every_command_has_help_text() -> None:
    commands = all_commands()
    names = {" ".join(p) for p, _ in commands}
    assert {"init", "run", "status", "listener add", "tls import"} <= names
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"{' '.join(path) or 'proxy-admin'} has no help"


def test_every_option_of_ours_has_help_text() -> None:
    for path, cmd in all_commands():
        if not path or (path[0] not in MY_GROUPS and path[0] not in MY_COMMANDS):
            continue
        for param in cmd.params:
            if param.param_type_name == "option":
                assert (param.help or "").strip(), f"{' '.join(path)} {param.opts} has no help"


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_help_runs(cli: Cli, path: tuple[str, ...]) -> None:
    r = cli(*path, "--help", config=False)
    assert r.exit_code == 0, r.output
    assert "Usage" in r.stdout


# --- error conventions ----------------------------------------------------------------


def test_missing_config_is_one_line_exit_2(cli: Cli) -> None:
    for args in (["status"], ["listener", "list"], ["tls", "show"], ["run"]):
        assert_one_line_error(cli(*args), 2, str(cli.config_path), "proxy-admin init")


def test_invalid_config_names_the_key(cli: Cli) -> None:
    cli.config_path.parent.mkdir(parents=True)
    cli.config_path.write_text('log_level = "loud"\n')
    assert_one_line_error(cli("status"), 2, "log_level")


def test_unknown_option_is_one_line_exit_2(cli: Cli) -> None:
    line = assert_one_line_error(cli("status", "--colour"), 2, "--colour")
    assert "--help" in line


def test_non_integer_port_is_one_line_exit_2(initialised: Cli) -> None:
    r = initialised("listener", "add", "x", "--protocol", "smtp", "--target", "h", "--port", "ab")
    assert_one_line_error(r, 2, "--port")


def test_group_without_subcommand_shows_help(cli: Cli) -> None:
    r = cli("listener")
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert "add" in r.stdout and "remove" in r.stdout


def test_config_from_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.init()
    monkeypatch.setenv("MAILTEE_CONFIG", str(cli.config_path))
    r = cli("status", "--json", config=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["config"] == str(cli.config_path)


def test_os_error_is_one_line_exit_1(initialised: Cli, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.csr"
    assert_one_line_error(initialised("tls", "csr", "--out", str(out)), 1, str(out))


def test_console_script_main(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("proxy-admin")
    if not script.exists():
        pytest.skip("proxy-admin console script not installed in this environment")
    r = subprocess.run(
        [str(script), "--config", str(tmp_path / "none.toml"), "listener", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("proxy-admin: error: ")
    assert r.stdout == ""


# --- init -----------------------------------------------------------------------------


def test_init_creates_everything(cli: Cli) -> None:
    r = cli("init", "--state-dir", "state", "--hostname", "gw.example.org")
    assert r.exit_code == 0, r.output
    etc = cli.config_path.parent
    state = etc / "state"
    config = load_config(cli.config_path)
    assert config.state_dir == "state"  # stored as given: the tree can be moved
    assert config.hostname == "gw.example.org"
    assert config.listener == [] and not config.demo.enabled
    for sub in ("reports", "archive", "tls"):
        assert (state / sub).is_dir()
    assert stat.S_IMODE((state / "tls").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "tls" / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.secrets_path.stat().st_mode) == 0o600
    assert cli.secrets() == {"listener": {}}
    cert = x509.load_pem_x509_certificate((state / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example.org"]
    assert str(cli.config_path) in r.stdout and "listener add" in r.stdout


def test_init_refuses_to_overwrite(initialised: Cli) -> None:
    before = initialised.config_path.read_bytes()
    line = assert_one_line_error(initialised("init"), 1, "already exists", "--force")
    assert str(initialised.config_path) in line
    assert initialised.config_path.read_bytes() == before


def test_init_force_keeps_the_certificate(initialised: Cli) -> None:
    cert = initialised.config_path.parent / "state" / "tls" / "cert.pem"
    pem = cert.read_bytes()
    r = initialised("init", "--force", "--state-dir", "state", "--demo")
    assert r.exit_code == 0, r.output
    assert cert.read_bytes() == pem
    assert load_config(initialised.config_path).demo.enabled


def test_init_demo(cli: Cli) -> None:
    r = cli("init", "--demo", "--state-dir", ".")
    assert r.exit_code == 0, r.output
    config = load_config(cli.config_path)
    assert config.demo.enabled
    by_name = {lst.name: lst for lst in config.listener}
    assert set(by_name) == {"smtp", "pop3"}
    assert (by_name["smtp"].listen, by_name["smtp"].port) == ("127.0.0.1", 2525)
    assert (by_name["smtp"].target_host, by_name["smtp"].target_port) == (
        "127.0.0.1",
        config.demo.smtp_port,
    )
    assert by_name["smtp"].target_tls == "none"
    assert (by_name["pop3"].port, by_name["pop3"].target_port) == (2110, config.demo.pop3_port)
    etc = cli.config_path.parent
    assert (etc / "reports").is_dir() and (etc / "tls" / "cert.pem").is_file()
    assert "run" in r.stdout and "2525" in r.stdout


def test_init_bad_hostname(cli: Cli) -> None:
    assert_one_line_error(cli("init", "--hostname", "bad host!"), 2, "--hostname")
    assert not cli.config_path.exists()


# --- status ---------------------------------------------------------------------------


@pytest.mark.parametrize("probe", ["proc", "connect"])
def test_status_json_and_table(
    initialised: Cli, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if probe == "connect":  # no /proc/net/tcp: fall back to a TCP connect
        monkeypatch.setattr(cli_module, "listening_sockets", lambda: None)
    elif cli_module.listening_sockets() is None:
        pytest.skip("no /proc/net/tcp here")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        r = initialised(
            "listener", "add", "up", "--protocol", "smtp", "--target", "h",
            "--listen", "127.0.0.1", "--port", str(port),
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
        closed.close()
        r = initialised(
            "listener", "add", "down", "--protocol", "pop3", "--target", "h",
            "--listen", "127.0.0.1", "--port", str(free),
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        reports = initialised.config_path.parent / "state" / "reports"
        (reports / "20261126T101500Z-smtp-0b5c9a52-4a5d-4c1e-9e0c-1f2a3b4c5d6e.mpr").write_text(
            "{}"
        )  # a committed pair, not ingested
        (reports / "20261126T101500Z-smtp-0b5c9a52-4a5d-4c1e-9e0c-1f2a3b4c5d6e.eml").write_text("")
        (reports / ".b.mpr.tmp").write_text("")
        r = initialised("status", "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        table = initialised("status")
    assert doc["reports_pending"] == 1
    # the service is not running: a port something else listens on is not mailtee's
    assert {x["name"]: x["accepting"] for x in doc["listeners"]} == {"up": False, "down": False}
    up = next(x for x in doc["listeners"] if x["name"] == "up")
    assert "in use by another program" in up["error"]
    assert list(doc) == sorted(doc)
    assert table.exit_code == 0
    assert "1 .mpr" in table.stdout
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line}
    assert rows["up"].split()[-1] == "no" and rows["down"].split()[-1] == "no"
    assert "in use by another program" in table.stdout


# --- run ------------------------------------------------------------------------------


@pytest.fixture
def fake_serve(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    calls = types.SimpleNamespace(args=None, behaviour=None)

    async def run_service(config: Config, secrets: Secrets, config_path: Path, **kw) -> None:
        calls.args = (config, secrets, config_path)
        if calls.behaviour is not None:
            raise calls.behaviour

    module = types.ModuleType("proxy.service")
    module.run_service = run_service  # type: ignore[attr-defined]
    import proxy

    monkeypatch.setitem(sys.modules, "proxy.service", module)
    monkeypatch.setattr(proxy, "service", module, raising=False)
    return calls


def test_run_calls_the_service(initialised: Cli, fake_serve: types.SimpleNamespace) -> None:
    r = initialised("run")
    assert r.exit_code == 0, r.output
    config, secrets, path = fake_serve.args
    assert isinstance(config, Config) and isinstance(secrets, Secrets)
    assert path == initialised.config_path


def test_run_ctrl_c_is_a_clean_stop(initialised: Cli, fake_serve: types.SimpleNamespace) -> None:
    fake_serve.behaviour = KeyboardInterrupt()
    r = initialised("run")
    assert r.exit_code == 0, r.output
    assert "stopped" in r.stderr and "Traceback" not in r.output


def test_run_operational_error_is_one_line(
    initialised: Cli, fake_serve: types.SimpleNamespace
) -> None:
    fake_serve.behaviour = ExceptionGroup("x", [OSError(98, "Address already in use")])
    assert_one_line_error(initialised("run"), 1, "Address already in use")


def test_run_refuses_readable_secrets(initialised: Cli, fake_serve: types.SimpleNamespace) -> None:
    initialised.secrets_path.chmod(0o644)
    assert_one_line_error(initialised("run"), 2, "chmod 600")
    assert fake_serve.args is None


def test_run_requires_passwords_of_target_users(
    initialised: Cli, fake_serve: types.SimpleNamespace
) -> None:
    data = initialised.config_path.read_text()
    assert "listener = []" not in data  # an operator can append [[listener]] by hand
    data += '\n[[listener]]\nname = "s"\nprotocol = "smtp"\ntarget_host = "h"\ntarget_user = "u"\n'
    initialised.config_path.write_text(data)
    assert_one_line_error(initialised("run"), 2, "target_password")
    assert fake_serve.args is None


def test_cli_archive_is_optional() -> None:
    # admin.cli imported fine above whether or not admin/cli_archive.py exists yet.
    assert cli_module.app is app
