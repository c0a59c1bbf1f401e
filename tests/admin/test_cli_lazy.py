"""admin.cli_lazy: the command tree built on demand (the console script's `app(...)`) is the
tree typer builds eagerly (`typer.main.get_command`, CliRunner): same help for every
command, same errors, and only the command that runs gets built."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from admin.cli import app
from admin.cli_lazy import LazyCommands, lazy_command


def _paths(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    if isinstance(cmd, TyperGroup):
        for name, sub in cmd.commands.items():
            out += _paths(sub, (*path, name))
    return out


def _run(root: Any, args: list[str]) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = root.main(args, prog_name="proxy-admin")
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def test_every_help_is_the_same_lazy_and_eager() -> None:
    paths = _paths(typer.main.get_command(app))
    assert len(paths) > 40
    for path in paths:
        args = [*path, "--help"]
        eager = _run(typer.main.get_command(app), args)
        assert _run(lazy_command(app), args) == eager, path
        assert eager[0] == 0 and eager[1].startswith("Usage: proxy-admin")


@pytest.mark.parametrize(
    "args",
    [[], ["nosuch"], ["listner", "list"], ["listener"], ["search"], ["search", "--bad", "x"]],
)
def test_errors_are_the_same_lazy_and_eager(args: list[str]) -> None:
    assert _run(lazy_command(app), args) == _run(typer.main.get_command(app), args)


def test_only_the_chosen_command_is_built() -> None:
    root = lazy_command(app)
    commands = root.commands
    assert isinstance(commands, LazyCommands)
    assert list(commands) == list(typer.main.get_command(app).commands)
    _run(root, ["--help"])
    assert commands._built == {}  # the listing used summaries
    _run(root, ["listener", "--help"])
    assert list(commands._built) == ["listener"]
