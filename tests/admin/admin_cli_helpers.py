"""Helpers shared by the proxy-admin tests: the in-process runner and error assertions."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from admin.cli import app


@dataclass
class Cli:
    """`cli("listener", "list")` runs `proxy-admin --config <tmp>/etc/config.toml listener list`."""

    config_path: Path
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None, config: bool = True) -> Any:
        argv: Sequence[str] = (["--config", str(self.config_path)] if config else []) + list(args)
        return self.runner.invoke(app, argv, input=input)

    @property
    def secrets_path(self) -> Path:
        return self.config_path.with_name("secrets.toml")

    def toml(self) -> dict:
        return tomllib.loads(self.config_path.read_text())

    def secrets(self) -> dict:
        return tomllib.loads(self.secrets_path.read_text())

    def init(self, *args: str) -> Any:
        r = self("init", "--state-dir", "state", "--hostname", "gw.example.org", *args)
        assert r.exit_code == 0, r.output
        return r


def assert_one_line_error(result: Any, code: int, *needles: str) -> str:
    """The result failed with `code` and exactly one `proxy-admin: error:` line."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("proxy-admin: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
