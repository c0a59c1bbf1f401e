"""Ending `proxy-admin` without the interpreter's teardown, for commands with nothing left
to clean up.

Why: at exit CPython finalises every loaded module (about 200 for a search: typer, click,
tantivy, sqlite3, ...), which costs ~10-13 ms of CPU -- a tenth of the `search` budget
(issue 12 item 4: p95 <= 100 ms). A read-only command that has closed everything it
opened (search, show) calls `skip_teardown()`, and so does printing a help text
(`skip_on_help`); the console script's `main()` then flushes
stdout and stderr and ends the process with `os._exit(code)`. Output and exit code are
the ones a normal exit gives. When the flush fails (stdout was a pipe that closed), the
normal exit runs, with Python's usual handling of that.

Only `main()` acts on it: a command run in-process (tests, CliRunner) exits as always.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_skip = False


def skip_teardown() -> None:
    """The running command holds nothing that needs closing, flushing or atexit handlers."""
    global _skip
    _skip = True


def reset() -> None:
    global _skip
    _skip = False


def exit_now(code: object) -> None:
    """End the process with `code` if the command asked for it; otherwise return."""
    if not _skip or not (code is None or isinstance(code, int)):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)


def skip_on_help(command: Any, ctx: Any, *, recursive: bool = True) -> None:
    """Make the `-h/--help` option of `command` (and of its sub-commands) skip the teardown
    when it prints the help: it leaves nothing open (`ctx`: see admin.cli_coerce.walk)."""
    from admin.cli_coerce import walk

    for cmd, cmd_ctx in walk(command, ctx, recursive=recursive):
        option = cmd.get_help_option(cmd_ctx)
        if option is None or getattr(option.callback, "skips_teardown", False):
            continue
        shown = option.callback

        def show_help(ctx: Any, param: Any, value: Any, shown: Any = shown) -> Any:
            if value and not ctx.resilient_parsing:
                skip_teardown()
            return shown(ctx, param, value)

        show_help.skips_teardown = True  # type: ignore[attr-defined]
        option.callback = show_help
