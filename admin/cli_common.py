"""Shared pieces of the `proxy-admin` commands: context, one-line errors, output helpers.

Commands stay thin (sqlite-utils style): they open a library object, call one method and
print. Expected library errors are converted to one stderr line at the edge, by
`ProxyAdminGroup` (the root command group), so the same conversion applies when the app is
run by `main()`, by a console script or in-process by a test's CliRunner. Extension
modules (admin/cli_archive.py) can add their own error types with `register_error`,
by class or, to keep its module unimported until a command needs it, by
"module:ClassName" (see admin/cli.py for the lazy-import rule).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    import logging

    from admin.config import Config, Secrets
    from archive.store import Archive

try:  # typer >= 0.26 vendors click; its exceptions derive from TyperException
    from typer import TyperException as _CliError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import ClickException as _CliError  # type: ignore[assignment]

from admin import paths
from admin.cli_text import (  # noqa: F401 - re-exported: the commands import them from here
    PROG,
    clip,
    display_width,
    error_line,
    format_table,
    terminal_safe,
    to_json,
)

#: Expected exception types -> exit code. Anything else is a bug and keeps its traceback.
#: A key is a class or "module:ClassName"; a named class whose module was never imported
#: cannot have been raised, so matching never imports anything.
_EXPECTED_ERRORS: dict[type[BaseException] | str, int] = {
    "admin.config:ConfigError": 2,
    "admin.config_keys:ConfigError": 2,  # the same class; loaded alone by `search`
    OSError: 1,
    # each package's one exception root (tests/test_error_roots.py): exit 1 unless a more
    # specific class is registered with its own code (QueryError 2, ...)
    "admin.errors:AdminError": 1,
    "archive.errors:ArchiveError": 1,
    "accounts.errors:AccountError": 1,
    "proxy.errors:ProxyError": 1,
    "web.errors:WebError": 1,
}


def register_error(exc_type: type[BaseException] | str, code: int = 1) -> None:
    """Make `exc_type` (a class or "module:ClassName") an expected error: one line, exit
    `code`. Prefer the string form for classes of heavy modules (archive, ldap3, ...)."""
    _EXPECTED_ERRORS[exc_type] = code


@dataclass
class CliContext:
    """What every command needs: where the config is, and how to read it."""

    config_path: Path

    def load_config(self) -> Config:
        from admin import config as cfg

        return cfg.load_config(self.config_path)

    def load_secrets(self, *, strict_mode: bool = True) -> Secrets:
        from admin import config as cfg

        return cfg.load_secrets(self.config_path, strict_mode=strict_mode)

    def state_dir(self, config: Config) -> Path:
        return paths.state_dir(config, self.config_path)

    def state_dir_only(self) -> Path:
        """The state dir, reading only that key of config.toml (no model: admin.config_keys)
        -- for read-only archive commands that need nothing else of the config."""
        from admin import config_keys

        return config_keys.load_state_dir(self.config_path)

    def save_config(self, config: Config) -> None:
        from admin import config as cfg

        cfg.save_config(config, self.config_path)

    def save_secrets(self, secrets: Secrets) -> None:
        from admin import config as cfg

        cfg.save_secrets(secrets, self.config_path)


def context(ctx: typer.Context) -> CliContext:
    """The CliContext set up by the root callback (or the default one, if there is none)."""
    found = ctx.find_object(CliContext)
    if found is None:
        found = CliContext(paths.resolve_config_path(None))
        ctx.ensure_object(dict)  # leave ctx.obj alone if something else owns it
    return found


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `proxy-admin: error: message` to stderr and exit with `code`."""
    typer.echo(error_line(message), err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    typer.echo(f"{PROG}: warning: {terminal_safe(str(message))}", err=True)


def is_interactive() -> bool:
    """True when stdout is a terminal (show progress bars); False when piped or captured."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def print_json(obj: Any) -> None:
    """Stable JSON (sorted keys, 2-space indent, UTF-8) on stdout."""
    typer.echo(to_json(obj))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    typer.echo(format_table(headers, rows))


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """`key: value` lines with the values aligned."""
    items = [(k, "" if v is None else terminal_safe(str(v))) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0) + 1
    for k, v in items:
        typer.echo(f"{(k + ':').ljust(width)} {v}".rstrip())


def _registered_class(key: type[BaseException] | str) -> type[BaseException] | None:
    if not isinstance(key, str):
        return key
    module, _, name = key.partition(":")
    loaded = sys.modules.get(module)
    found = getattr(loaded, name, None) if loaded is not None else None
    return found if isinstance(found, type) else None


def _expected_code(e: BaseException) -> int | None:
    codes = {
        cls: code
        for key, code in _EXPECTED_ERRORS.items()
        if (cls := _registered_class(key)) is not None
    }
    for exc_type in type(e).__mro__:
        if exc_type in codes:
            return codes[exc_type]
    return None


class ProxyAdminGroup(TyperGroup):
    """The root group: every error a user can cause becomes one stderr line.

    - usage errors (unknown option, bad int, missing argument): exit 2
    - registered expected errors (ConfigError 2, OSError 1, ...): exit per registry
    - Ctrl-C: exit 130 after one "interrupted" line
    Anything else is a bug and propagates with its traceback (typer shows no locals).

    Plain str/int/Path parameters of the root and of the chosen command are parsed
    without pydantic (admin.cli_coerce: ~50 ms less start-up per command), and printing
    a help text ends the console script without the interpreter's teardown
    (admin.cli_exit).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from admin import cli_coerce, cli_exit

        cli_coerce.install(self, ctx, recursive=False)
        cli_exit.skip_on_help(self, ctx, recursive=False)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        # the names only: with admin.cli_lazy, looking a command up builds it
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        summaries = getattr(self.commands, "summaries", None)  # admin.cli_lazy.LazyCommands
        if summaries is None:
            return super().format_commands(ctx, formatter)
        with summaries():
            return super().format_commands(ctx, formatter)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            from admin import cli_coerce, cli_exit

            cli_coerce.install(cmd, ctx)
            cli_exit.skip_on_help(cmd, ctx)
        return name, cmd, rest

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name or PROG, complete_var, standalone_mode=False, **extra)
        except _CliError as e:
            code = getattr(e, "exit_code", 1)
            err_ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":
                # `proxy-admin listener` alone: show the group's help. With rich, typer has
                # printed it already and the message is empty.
                if e.format_message().strip():
                    typer.echo(e.format_message())
            else:
                hint = ""
                if code == 2 and err_ctx is not None:  # a usage error
                    hint = f" (see '{err_ctx.command_path} --help')"
                typer.echo(error_line(e.format_message() + hint), err=True)
        except typer.Abort:
            typer.echo(f"{PROG}: interrupted", err=True)
            code = 130
        except Exception as e:
            expected = _expected_code(e)
            if expected is None:
                raise
            from archive.errtext import describe  # not at the top: --help loads no archive/

            typer.echo(error_line(describe(e)), err=True)
            code = expected
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


class QueryCommand(TyperCommand):
    """A command whose positional QUERY may start with '-': `search '-from:alice 請求書'`
    (negation is part of the query language, docs/archive.md).

    Before click parses, every token that is neither one of the command's options nor an
    option's value is moved behind a `--`, so click takes it as an argument instead of
    failing with "No such option: -f". Options may still come before or after the query;
    an explicit `--` from the user is left alone.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._query_last(ctx, list(args)))

    def _query_last(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            return args
        flags: set[str] = set()
        valued: set[str] = set()
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") != "option":
                continue
            names = [*param.opts, *param.secondary_opts]
            (flags if getattr(param, "is_flag", False) else valued).update(names)

        def is_option(token: str) -> bool:
            if token in flags or token in valued:
                return True
            if token.startswith("--") and token.split("=", 1)[0] in valued:
                return True  # --limit=5
            return token[:2] in valued and token[2:].isdigit()  # -n5

        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            if not is_option(token):
                positional.append(token)
            else:
                options.append(token)
                if token in valued and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            i += 1
        return [*options, "--", *positional] if positional else options


def setup_logging(level: str) -> logging.Handler:
    """Log to stderr at `level` (proxy.logsetup; imported only by the commands that log)."""
    from proxy.logsetup import setup_logging as setup

    return setup(level)


#: the `--json` switch every listing/reporting command shares
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def hostport(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reload_hint() -> None:
    pa = "proxy-admin "
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - typer < 0.26 uses click itself
        from click import get_current_context
    click_ctx = get_current_context(silent=True)
    found = click_ctx.find_object(CliContext) if click_ctx is not None else None
    if found is not None:
        pa = admin_command(found)
    typer.echo(
        f"A running service applies this on reload: `{pa}reload` (or systemctl reload mailtee)."
    )


def config_arg(c: CliContext) -> str:
    """`--config X ` when the config is not the default one, for printed next steps."""
    if c.config_path == paths.resolve_config_path(None):
        return ""
    return f"--config {c.config_path} "


def admin_executable() -> str:
    """How the user can run this very proxy-admin again from where they stand.

    `proxy-admin` when that name on PATH is this program (the .deb, an activated venv);
    otherwise the path it was started by, relative to the working directory when it lies
    below it (`make run` starts `.venv/bin/proxy-admin`, which is not on PATH). Run
    in-process (tests, `python -c`), it is `proxy-admin`.
    """
    import shutil

    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0.name != PROG:
        return PROG
    on_path = shutil.which(PROG)
    if on_path and Path(on_path).resolve() == argv0.resolve():
        return PROG
    absolute = argv0.absolute()
    try:
        rel = absolute.relative_to(Path.cwd())
    except ValueError:
        return str(absolute)
    return str(rel) if len(rel.parts) > 1 else f"./{rel}"


def admin_command(c: CliContext) -> str:
    """`[sudo ]<proxy-admin> [--config X] ` for printed next steps (see admin_executable;
    `sudo` when this runs under sudo, as the user will need it again)."""
    sudo = "sudo " if os.environ.get("SUDO_USER") and os.geteuid() == 0 else ""
    return f"{sudo}{admin_executable()} {config_arg(c)}"


def audit(c: CliContext, action: str, detail: dict[str, Any]) -> None:
    """Record a configuration change in the catalog's audit log (DESIGN: audit log of
    admin commands). Best effort: a missing or busy archive only warns, because the
    change itself has already been saved."""
    from archive.catalog import Catalog

    try:
        path = c.state_dir(c.load_config()) / "archive" / "catalog.sqlite"
        if not path.parent.is_dir():
            return
        catalog = Catalog(path)
        try:
            catalog.audit(action, detail)
        finally:
            catalog.conn.close()
    except Exception as e:  # noqa: BLE001 - never turn a saved change into a failure
        warn(f"could not write the audit log: {e}")


# --- archive commands (admin/cli_archive.py, admin/cli_maintenance.py) -----------------


def existing_state_dir(ctx: typer.Context, *, state_only: bool = False) -> Path:
    """The configured state directory; one-line error if it was never created.
    `state_only`: read only `state_dir` of config.toml, not the whole model."""
    c = context(ctx)
    state = c.state_dir_only() if state_only else c.state_dir(c.load_config())
    if not state.is_dir():
        fail(f"state dir {state} does not exist (run `proxy-admin init`)")
    return state


@contextlib.contextmanager
def opened_archive(
    ctx: typer.Context, *, reset_index: bool = False, state_only: bool = False
) -> Iterator[Archive]:
    """The archive of the configured state dir, closed afterwards. `state_only`: the
    command reads nothing else of the config (search, show, export), so only that key
    is read (start-up cost, issue 12 item 4)."""
    from archive.store import Archive

    archive = Archive(existing_state_dir(ctx, state_only=state_only), reset_index=reset_index)
    try:
        yield archive
    finally:
        archive.close()


def show_progress(json_out: bool) -> bool:
    """Progress bars only for people: on a terminal and without --json."""
    return is_interactive() and not json_out


@contextlib.contextmanager
def progress(label: str, show: bool, unit: str = "msg") -> Iterator[Any]:
    """A callback(done, total) drawing a rich bar with rate and ETA, or None.

    `unit="bytes"` shows sizes and transfer speed instead of counts and msg/s.
    """
    if not show:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:  # type: ignore[no-untyped-def]
            return Text(f"{task.speed:,.0f} msg/s" if task.speed else "")

    counts: list[ProgressColumn] = (
        [DownloadColumn(), TransferSpeedColumn()]
        if unit == "bytes"
        else [MofNCompleteColumn(), Rate()]
    )
    with Progress(
        TextColumn(label), BarColumn(), *counts, TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update
