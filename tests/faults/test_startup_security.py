"""Security checks at start: names that could escape the state dir, readable secrets.

Run against the real `proxy-admin` executable (the in-process CLI tests in tests/admin
use a fake service); `run` must refuse with exit code 2 and one line, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from admin.config import ConfigError, parse_config

PROXY_ADMIN = str(Path(sys.executable).with_name("proxy-admin"))

ESCAPING_NAMES = ["../reports", "..", "a/b", "/etc/passwd", ".hidden", "a\\b", "x\x00y", "a b"]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_listener_names_that_could_escape_are_rejected(name):
    data = {
        "listener": [{"name": name, "protocol": "smtp", "target_host": "127.0.0.1"}],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "name" in str(err.value)


def write_config(tmp_path: Path, listener_name: str = "smtp") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        "[[listener]]\n"
        f'name = "{listener_name}"\nprotocol = "smtp"\nlisten = "127.0.0.1"\nport = 1\n'
        'target_host = "127.0.0.1"\n'
    )
    return cfg


def run(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROXY_ADMIN, "--config", str(cfg), "run"], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_run_refuses_group_or_world_readable_secrets(tmp_path, mode):
    cfg = write_config(tmp_path)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("")
    os.chmod(secrets, mode)
    r = run(cfg)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr + r.stdout
    assert "secrets.toml" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "state" / "reports").exists()  # refused before doing anything


def test_run_refuses_an_escaping_listener_name_in_the_file(tmp_path):
    cfg = write_config(tmp_path, "../../escape")
    r = run(cfg)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "state").exists()
