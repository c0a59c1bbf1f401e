"""admin.cli_coerce gives exactly what typer's own (pydantic) coercion gives: the same value,
or the same usage error, for every input -- the fast path answers some, typer the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer._coercion import build_runtime_param

from admin.cli_coerce import FastRuntimeParam, install


def _command() -> Any:
    app = typer.Typer()

    @app.command()
    def cmd(
        name: str,
        text: Annotated[str | None, typer.Option()] = None,
        limit: Annotated[int, typer.Option(min=1)] = 50,
        count: Annotated[int, typer.Option()] = 0,
        top: Annotated[int, typer.Option(min=0, max=10)] = 5,
        path: Annotated[Path | None, typer.Option()] = None,
        existing: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
        resolved: Annotated[Path | None, typer.Option(resolve_path=True)] = None,
        flag: bool = False,
    ) -> None:
        """A command with one parameter of each plain kind."""

    return typer.main.get_command(app)


STRINGS = ["abc", "", " a ", "請求書", "-x", "a\x00b", "\udcff", "é\udce9"]
INTS = ["1", "0", "50", "007", " 3", "+2", "-1", "1_0", "1.0", "1.5", "0x10", "３", "", "abc"]
INTS += ["9" * 18, "9" * 19, "99999999999999999999999", 50, 0, -3, 11]


def _paths(tmp: Path) -> list[Any]:
    (tmp / "dir").mkdir()
    (tmp / "file").write_text("x")
    names = ["x", "", ".", "a/../b", "missing", "\udcff", "-"]
    return [*names, str(tmp / "dir"), str(tmp / "file"), tmp / "file", Path("rel")]


def _outcome(runtime: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        return "value", runtime.coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as e:
        return "error", e.format_message()


def test_fast_and_typer_coercion_agree(tmp_path: Path) -> None:
    command = _command()
    ctx = command.context_class(command, info_name="cmd")
    inputs = {str: STRINGS, int: INTS, Path: _paths(tmp_path), bool: [True, False]}
    checked = 0
    for param in command.get_params(ctx):
        desc = param.type_descriptor
        fast, slow = FastRuntimeParam(desc), build_runtime_param(desc)
        for value in [None, *inputs[desc.annotation]]:
            got = _outcome(fast, value, param, ctx)
            assert got == _outcome(slow, value, param, ctx), (param.name, value)
            checked += 1
    assert checked > 80


def test_install_covers_the_command_and_its_help_option() -> None:
    command = _command()
    install(command, None)
    ctx = command.context_class(command, info_name="cmd")
    kinds = {p.name: type(p._runtime_param).__name__ for p in command.get_params(ctx)}
    assert set(kinds.values()) == {"FastRuntimeParam"}
    assert "help" in kinds


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--limit", "3"], 0, ""),
        (["--limit", "0"], 2, "Input should be greater than or equal to 1"),
        (["--limit", "x"], 2, "Input should be a valid integer"),
        (["--top", "11"], 2, "Input should be less than or equal to 10"),
        (["--existing", "/nonexistent/x"], 2, "does not exist"),
    ],
)
def test_errors_reach_the_user_as_typer_words_them(
    args: list[str], code: int, message: str
) -> None:
    command = _command()
    install(command, None)
    try:
        command.main(["n", *args], standalone_mode=False)
        got = 0, ""
    except typer.BadParameter as e:
        got = e.exit_code, e.format_message()
    assert got[0] == code and message in got[1]
