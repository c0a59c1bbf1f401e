"""`proxy-admin run` start-up failures the operator causes are one line, exit 1."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from admin.cli import app
from admin.config import Config, ListenerConfig, save_config


def test_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lc = ListenerConfig(name="smtp", protocol="smtp", listen="127.0.0.1", port=port,
                            target_host="127.0.0.1", target_port=9)  # fmt: skip
        path = tmp_path / "config.toml"
        save_config(Config(state_dir=str(tmp_path / "state"), listener=[lc]), path)
        r = CliRunner().invoke(app, ["--config", str(path), "run"])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (
        f"proxy-admin: error: listener smtp: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    )
