"""Plain command-line values (str, int, Path) parsed without importing pydantic.

Why: typer >= 0.29 coerces every parsed parameter through a pydantic TypeAdapter, built
the first time the parameter is processed, even when its value is None. One parsed
`--config` therefore costs ~50 ms of pydantic imports on every command, which alone
is half of the `proxy-admin search` budget (issue 12 item 4: p95 <= 100 ms).

Theory of operation: before click processes a command's parameters, `install(command)`
gives each parameter whose annotation is plain `str`, `int` or `Path` a `FastRuntimeParam`.
It answers only the unambiguous cases itself -- a clean string, a string of ASCII digits
within the option's min/max, a path string -- with exactly the value typer would produce,
and hands every other value (signs, spaces, underscores, out of range, lone surrogates,
...) to typer's own pydantic coercion, built on first use. So the values and the error
messages a user sees are typer's; tests/admin/test_cli_coerce.py compares both paths.

It uses typer's private `_runtime_param` slot (typer.core._TyperParameter). With a typer
that has no such slot, `install` does nothing and typer coerces as usual: slower, never
different.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: plain digits only: what int() and pydantic read the same way (no sign, space, "_")
_MAX_FAST_DIGITS = 18


def _eligible(param: Any) -> bool:
    desc = getattr(param, "type_descriptor", None)
    if desc is None or getattr(param, "_runtime_param", False) is not None:
        return False
    if param.multiple or param.nargs != 1 or desc.file_annotation is not None:
        return False
    info = desc.parameter_info
    if getattr(info, "parser", None) is not None:
        return False
    if desc.annotation is bool:
        return True
    if desc.annotation is int:
        return not getattr(info, "clamp", False)
    if desc.annotation is Path:
        return getattr(info, "path_type", None) is None
    return desc.annotation is str


class FastRuntimeParam:
    """Stands in for typer's RuntimeParam of one str/int/Path parameter (see module doc)."""

    __slots__ = ("descriptor", "_slow")

    def __init__(self, descriptor: Any) -> None:
        self.descriptor = descriptor
        self._slow: Any = None

    def slow(self) -> Any:
        """typer's own coercion for this parameter (imports pydantic)."""
        if self._slow is None:
            from typer._coercion import build_runtime_param

            self._slow = build_runtime_param(self.descriptor)
        return self._slow

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return None  # what typer returns for a missing single value
        fast = self._fast(value, param, ctx)
        if fast is not None:
            return fast
        return self.slow().coerce(value, param=param, ctx=ctx)

    def _fast(self, value: Any, param: Any, ctx: Any) -> Any:
        """The value typer would give, or None: not a case answered here."""
        annotation = self.descriptor.annotation
        if annotation is bool:
            return value if type(value) is bool else None
        if annotation is int:
            return self._int(value)
        if type(value) is str and not _clean(value):
            return None
        if annotation is str:
            return value if type(value) is str else None
        if (type(value) is str and value) or isinstance(value, Path):
            # typer's own checks (exists=, dir_okay=, resolve_path=, ...) on a Path
            from typer._param_types import coerce_cli_path

            info = self.descriptor.parameter_info
            return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
        return None

    def _int(self, value: Any) -> int | None:
        if type(value) is str:
            if not (value.isascii() and value.isdigit() and len(value) <= _MAX_FAST_DIGITS):
                return None
            value = int(value)
        elif type(value) is not int:
            return None
        info = self.descriptor.parameter_info
        if (info.min is not None and value < info.min) or (
            info.max is not None and value > info.max
        ):
            return None  # typer words the range error
        return value


def _clean(value: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates from undecodable argv bytes)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk(command: Any, ctx: Any, *, recursive: bool = True) -> Iterator[tuple[Any, Any]]:
    """`command` and, if `recursive`, every sub-command, each with a context to read its
    parameters with. `ctx` is the command's context or, for a command about to run, its
    parent's: the help option (`-h/--help`, created and cached by click on first use) is
    then made with the context the command's own would be."""
    if ctx is None or ctx.command is not command:
        ctx = command.context_class(
            command, info_name=command.name, parent=ctx, **command.context_settings
        )
    yield command, ctx
    if recursive:
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub, ctx)


def install(command: Any, ctx: Any, *, recursive: bool = True) -> None:
    """Give the plain parameters of `command` a FastRuntimeParam, and, if `recursive`,
    those of every sub-command (`ctx`: see walk)."""
    for cmd, cmd_ctx in walk(command, ctx, recursive=recursive):
        for param in cmd.get_params(cmd_ctx):
            if _eligible(param):
                param._runtime_param = FastRuntimeParam(param.type_descriptor)
