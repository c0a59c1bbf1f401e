"""The `proxy-admin` command tree, built one command at a time when it is used.

Why: typer turns every registered function into a click command on every start (signature,
type hints, one parameter object per option): ~50 commands, ~15 ms on a quiet machine,
twice that under load -- a fifth of the `--help` and `search` budgets (issue 12 item 4).
A command line runs one command, so `LazyTyper` builds the root group alone and gives it a
`LazyCommands` mapping that builds a command (or a whole sub-group such as `listener`) the
first time it is looked up, with typer's own functions, so the command is exactly the one
typer would have built. The root `--help` lists the commands from summaries (name, help,
short help, hidden, deprecated: what the listing shows) instead of building them.

`typer.testing.CliRunner` and `typer.main.get_command(app)` still build the whole tree
eagerly; tests/admin/test_cli_imports.py checks that both give the same help for every
command. With a typer whose internals differ (no `get_command_from_info`, ...), or an app
that typer would give extra parameters (shell completion), `LazyTyper` is a plain Typer.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer

try:
    from typer.main import (
        TyperInfo,
        _typer_developer_exception_attr_name,
        except_hook,
        get_command_from_info,
        get_command_name,
        get_group_from_info,
        solve_typer_info_defaults,
    )
    from typer.models import DeveloperExceptionConfig

    _LAZY_OK = True
except ImportError:  # pragma: no cover - another typer: build eagerly
    _LAZY_OK = False


class LazyCommands(MutableMapping[str, Any]):
    """name -> click command of one typer group, each built on first access."""

    def __init__(self, app: typer.Typer) -> None:
        self._app = app
        self._infos: dict[str, tuple[str, Any]] = {}
        self._built: dict[str, Any] = {}
        self._summaries: dict[str, Any] | None = None
        for info in app.registered_commands:
            assert info.callback is not None
            self._infos[info.name or get_command_name(info.callback.__name__)] = ("cmd", info)
        for info in app.registered_groups:
            self._infos[solve_typer_info_defaults(info).name] = ("group", info)

    def _build(self, name: str) -> Any:
        kind, info = self._infos[name]
        app = self._app
        if kind == "cmd":
            return get_command_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
        return get_group_from_info(
            info,
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode,
            suggest_commands=app.suggest_commands,
        )

    def _summary(self, name: str) -> Any:
        """A bare click command with what a group's command listing shows of `name`."""
        kind, info = self._infos[name]
        if kind == "group":
            info = solve_typer_info_defaults(info)
            text = info.help
        else:
            import inspect

            text = inspect.cleandoc(info.help) if info.help is not None else None
            text = text if text is not None else inspect.getdoc(info.callback)
        return typer.core.TyperCommand(
            name=name,
            help=text,
            short_help=info.short_help,
            hidden=info.hidden,
            deprecated=info.deprecated,
        )

    @contextlib.contextmanager
    def summaries(self) -> Iterator[None]:
        """Within: unbuilt commands are looked up as summaries (for the help listing)."""
        self._summaries = {}
        try:
            yield
        finally:
            self._summaries = None

    def __getitem__(self, name: str) -> Any:
        if name in self._built:
            return self._built[name]
        if name not in self._infos:
            raise KeyError(name)
        if self._summaries is not None:
            if name not in self._summaries:
                self._summaries[name] = self._summary(name)
            return self._summaries[name]
        self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._infos:
            self._infos[name] = ("added", None)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._infos[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos


def _lazy_ok(app: typer.Typer) -> bool:
    if not _LAZY_OK or app._add_completion:
        return False
    # a group without a name merges its commands into ours: typer's eager build does that
    return all(solve_typer_info_defaults(g).name for g in app.registered_groups)


def lazy_command(app: typer.Typer) -> Any:
    """The root click group of `app` with a LazyCommands mapping (see module doc)."""
    if not _lazy_ok(app):
        return typer.main.get_command(app)
    shell = copy.copy(app)
    shell.registered_commands = []
    shell.registered_groups = []
    root = get_group_from_info(
        TyperInfo(shell),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )
    root.commands = LazyCommands(app)
    return root


class LazyTyper(typer.Typer):
    """A Typer whose `app(...)` (the console script) builds only the command it runs."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _LAZY_OK:  # pragma: no cover - another typer
            return super().__call__(*args, **kwargs)
        # what typer.Typer.__call__ does, with lazy_command for typer.main.get_command
        if sys.excepthook != except_hook:
            sys.excepthook = except_hook
        try:
            return lazy_command(self)(*args, **kwargs)
        except Exception as e:
            setattr(
                e,
                _typer_developer_exception_attr_name,
                DeveloperExceptionConfig(
                    pretty_exceptions_enable=self.pretty_exceptions_enable,
                    pretty_exceptions_show_locals=self.pretty_exceptions_show_locals,
                    pretty_exceptions_short=self.pretty_exceptions_short,
                ),
            )
            raise e
