"""Fixtures for the proxy-admin tests: an in-process CLI runner on a temp config."""

from __future__ import annotations

from pathlib import Path

import pytest
from admin_cli_helpers import Cli
from typer.testing import CliRunner


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("MAILTEE_CONFIG", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    return Cli(tmp_path / "etc" / "config.toml", CliRunner())


@pytest.fixture
def initialised(cli: Cli) -> Cli:
    cli.init()
    return cli
