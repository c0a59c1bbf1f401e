"""`make run` on a fresh checkout: every command its output suggests works as printed
(issue 10 item 13), and Ctrl-C prints what docs/cli.md says.

The test stands where a user of a fresh clone stands: a directory with `.venv` (here a
link to the suite's own virtualenv: `make venv` is what creates it) and no `proxy-admin`
on PATH. It runs the Makefile's own `init` command line, then every command of the
printed "Next:" block through bash exactly as printed -- except the demo's fixed ports
(2525/2110/2526/2111), which are swapped for free ones, since a shared test machine may
have them in use.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.https_client import Client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIXED_PORTS = ("2525", "2110", "2526", "2111", "8443")


def _free_ports(n: int) -> list[str]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _init_command() -> list[str]:
    """The Makefile's `run` target line that creates the config, as a list of words."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"\$\(BIN\)/proxy-admin --config \$\(CONFIG\) (init [^\n]+)", text)
    assert m, "Makefile: no init line in the run target"
    return [".venv/bin/proxy-admin", "--config", "var/config.toml", *m.group(1).split()]


def _next_commands(output: str) -> list[str]:
    lines = output.split("\nNext:", 1)[1].splitlines()
    return [ln.strip() for ln in lines if ln.startswith("  ")]


def test_every_suggested_command_works_as_printed(tmp_path: Path) -> None:
    clone = tmp_path / "mailtee"
    clone.mkdir()
    (clone / ".venv").symlink_to(Path(sys.prefix))
    env = {k: v for k, v in os.environ.items() if k not in ("MAILTEE_CONFIG", "JOURNAL_STREAM")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)

    init = subprocess.run(_init_command(), cwd=clone, env=env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    commands = _next_commands(init.stdout)
    assert commands[0].startswith(".venv/bin/proxy-admin --config var/config.toml run")
    assert any(c.startswith("swaks ") for c in commands)
    assert all("proxy-admin" not in c or c.startswith(".venv/bin/proxy-admin") for c in commands)

    # The demo has web access, and init says where and with which login.
    (web_line,) = [ln for ln in init.stdout.splitlines() if ln.startswith("Web access: ")]
    (login_line,) = [ln for ln in init.stdout.splitlines() if "demo login: " in ln]
    name, password = login_line.split("demo login: ", 1)[1].split("  ", 1)[0].split(" / ")
    assert web_line == "Web access: https://127.0.0.1:8443/"

    # Move the demo off its fixed ports, in the config and in the printed commands alike.
    ports = dict(zip(FIXED_PORTS, _free_ports(len(FIXED_PORTS)), strict=True))
    config = clone / "var" / "config.toml"
    text = config.read_text()
    for old, new in ports.items():
        text = re.sub(rf"\b{old}\b", new, text)
        commands = [re.sub(rf"\b{old}\b", new, c) for c in commands]
    config.write_text(text)

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    run = subprocess.Popen(["bash", "-c", f"exec {commands[0]}"], cwd=clone, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        status_cmd = next(c for c in commands if c.endswith(" status"))
        deadline = time.monotonic() + 30
        while '"running": true' not in sh(f"{status_cmd} --json").stdout:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.3)
        results = {}
        for command in commands[1:]:
            if "search" in command:
                deadline = time.monotonic() + 30
                while True:  # the service's ingest archives the message within seconds
                    results[command] = sh(command)
                    if "test" in results[command].stdout or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            else:
                results[command] = sh(command)
        for command, r in results.items():
            assert r.returncode == 0, (command, r.stdout, r.stderr)
        # The printed demo login works at the printed address (moved to its free port),
        # over HTTPS with the appliance CA, and finds the swaks message.
        web = Client(int(ports["8443"]), clone / "var" / "tls" / "ca.pem")
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = web.login(name, password)
                break
            except OSError:  # the web child is still starting
                assert time.monotonic() < deadline, "the web side did not come up"
                time.sleep(0.3)
        assert reply.status == 303, reply.text
        assert "alice@example.com" in web.get("/search?q=test").text
        curl = next(r for c, r in results.items() if c.startswith("curl"))
        assert "To: alice@example.com" in curl.stdout
        status = next(r for c, r in results.items() if c.endswith(" status"))
        assert "service:" in status.stdout and "running (pid" in status.stdout
        search = next(r for c, r in results.items() if " search " in c)
        assert search.stdout.count("\n") >= 2, search  # the header and the swaks message
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in that terminal does
        out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert "tightened the modes" not in err  # init left nothing loose for run to repair
    assert err.rstrip().splitlines()[-1] == "proxy-admin: stopped"
