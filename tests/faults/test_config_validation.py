"""Hand-edited config.toml mistakes `run` used to accept (issue 10 item 7).

A `hostname` with CR/LF (it goes into every SMTP reply line: reply injection), two
listeners on one address:port (`run` then died with exit 1 at bind time, after
everything else had started), and an empty config.toml (started with defaults and no
listener). Each must make the real `proxy-admin run` exit 2 with one line naming the
problem, before anything is created.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROXY_ADMIN = str(Path(sys.executable).with_name("proxy-admin"))

LISTENER = """
[[listener]]
name = "{name}"
protocol = "smtp"
listen = "{listen}"
port = {port}
target_host = "127.0.0.1"
"""


def config_text(state: Path, *, hostname: str = "mailtee.test", listeners=()) -> str:
    text = f'hostname = "{hostname}"\nstate_dir = "{state}"\n'
    for name, listen, port in listeners:
        text += LISTENER.format(name=name, listen=listen, port=port)
    return text


CASES = {
    "hostname-crlf": (
        dict(hostname="mx.example.org\\r\\n250 injected", listeners=[("smtp", "127.0.0.1", 2525)]),
        "hostname",
    ),
    "hostname-space": (dict(hostname="mail tee", listeners=[("a", "127.0.0.1", 2525)]), "hostname"),
    "same-address-port": (
        dict(listeners=[("a", "127.0.0.1", 2525), ("b", "127.0.0.1", 2525)]),
        "both listen on 127.0.0.1 port 2525",
    ),
    "wildcard-covers": (
        dict(listeners=[("a", "0.0.0.0", 2525), ("b", "127.0.0.1", 2525)]),
        "0.0.0.0 covers it",
    ),
    "empty-file": (None, "empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_refuses_with_exit_2_and_one_line(tmp_path: Path, case: str) -> None:
    fields, needle = CASES[case]
    config = tmp_path / "config.toml"
    state = tmp_path / "state"
    config.write_text("" if fields is None else config_text(state, **fields))
    (tmp_path / "secrets.toml").write_text("")
    (tmp_path / "secrets.toml").chmod(0o600)
    proc = subprocess.run(
        [PROXY_ADMIN, "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not state.exists()


def test_distinct_ports_and_families_are_fine(tmp_path: Path) -> None:
    from admin.config import parse_config

    listeners = [
        {"name": "a", "protocol": "smtp", "listen": "0.0.0.0", "port": 2525, "target_host": "h"},
        {"name": "b", "protocol": "smtp", "listen": "::1", "port": 2525, "target_host": "h"},
        {"name": "c", "protocol": "smtp", "listen": "127.0.0.1", "port": 2526, "target_host": "h"},
        {"name": "d", "protocol": "smtp", "listen": "127.0.0.1", "port": 0, "target_host": "h"},
        {"name": "e", "protocol": "smtp", "listen": "127.0.0.1", "port": 0, "target_host": "h"},
    ]
    assert len(parse_config({"hostname": "mx-1.example.org.", "listener": listeners}).listener) == 5
