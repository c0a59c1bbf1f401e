"""`proxy-admin`'s console script: the common `search` without typer, everything else by
the typer app (admin.cli).

Why. `proxy-admin search` as a whole command must stay within 100 ms at the p95 on a
100,000-message store (issue 12 item 4). Importing typer (and with it its vendored click)
is the largest part of every command's start-up: 46 ms of a 132 ms search in
docs/performance.md's eleventh pass, more than the search itself. So the console
script first tries to answer a search here, with the standard library, admin.paths,
admin.config_keys and the archive's reading side only.

The rule that keeps the two paths one command. This module accepts only the plain forms
of the command line, strictly:

    proxy-admin [--config PATH] search [--json] [--limit N | -n N] [--user U | -u U] QUERY

(options in any order, each at most once, `--opt=value` and `-nN` too, QUERY a single
token that may start with '-' as the typer command allows, or `-- QUERY` last). Anything
else returns None before any work, and the typer app runs: `--help`, an unknown option,
a second query word, an option after `--`, a limit that is not a positive number. So do
failures: a missing config or state dir, a query the parser refuses, an unknown user, an
archive that cannot be opened. They raise before the audit row is written, and the typer
app then runs the same command and reports the error in its own words and exit code.
Both paths search and build their output with admin.cli_search, and
tests/archive/test_cli_fast.py compares them case by case (output, exit code, audit
rows).
`MAILTEE_CLI_FULL=1` in the environment always takes the typer app.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

#: the search command's options: name -> the field it sets (flags and valued options)
_FLAGS = {"--json": "json_out"}
_VALUED = {"--limit": "limit", "-n": "limit", "--user": "user", "-u": "user"}


@dataclass
class SearchArgs:
    config: Path | None = None
    query: str | None = None
    user: str | None = None
    limit: int = 50
    json_out: bool = False


def parse_search(argv: list[str]) -> SearchArgs | None:
    """The search the command line asks for, or None: not a plain search (see above)."""
    args = SearchArgs()
    i = 0
    if argv[:1] == ["--config"] and len(argv) > 1:
        value, i = argv[1], 2
    elif argv[:1] and argv[0].startswith("--config="):
        value, i = argv[0][len("--config=") :], 1
    else:
        value = None
    if value is not None:
        if not value or value.startswith("-"):
            return None
        args.config = Path(value)
    if argv[i : i + 1] != ["search"]:
        return None
    seen: set[str] = set()
    rest = argv[i + 1 :]
    j = 0
    while j < len(rest):
        token = rest[j]
        j += 1
        name, value = token, None
        if token.startswith("--") and "=" in token:
            name, value = token.split("=", 1)
        elif token[:2] == "-n" and len(token) > 2:
            name, value = "-n", token[2:]
        if name in _FLAGS and value is None:
            field = _FLAGS[name]
        elif name in _VALUED:
            field = _VALUED[name]
            if value is None:
                if j >= len(rest):
                    return None
                value, j = rest[j], j + 1
            if not value or value.startswith("-"):
                return None
        elif token == "--" and args.query is None and len(rest) - j == 1:
            args.query = rest[j]  # `search -- QUERY`: the one token after it is the query
            break
        elif token.startswith("--") or token == "-h" or args.query is not None:
            return None  # --help, --, an unknown option, a second positional
        else:
            args.query = token
            continue
        if field in seen:
            return None
        seen.add(field)
        if field == "json_out":
            args.json_out = True
        elif field == "user":
            args.user = value
        else:
            assert value is not None
            if not (value.isascii() and value.isdigit()) or int(value) < 1:
                return None
            args.limit = int(value)
    return args if args.query is not None else None


def search(args: SearchArgs) -> bool:
    """Run the search and print it; False (nothing printed, no audit row) when the typer
    command must run instead."""
    from admin.cli_exit import skip_teardown
    from admin.cli_search import audited_search, search_output
    from admin.config_keys import load_state_dir
    from admin.paths import resolve_config_path

    assert args.query is not None
    try:
        state = load_state_dir(resolve_config_path(args.config))
        if not state.is_dir():
            return False
        from archive.store import Archive

        archive = Archive(state)
    except Exception:
        return False  # the typer command reports it
    try:
        hits, total = audited_search(archive, args.query, args.user, args.limit)
    except Exception:
        try:
            archive.close()
        except Exception:
            pass  # the typer command opens it again and reports what fails
        return False
    try:
        archive.close()  # after the audit row: from here on, errors are the command's own
    except Exception as e:
        _failed(e)
    skip_teardown()
    out, err = search_output(hits, total, args.query, args.user, args.json_out)
    try:
        if out is not None:
            sys.stdout.write(out + "\n")
            sys.stdout.flush()
        if err is not None:
            sys.stderr.write(err + "\n")
    except Exception as e:
        _failed(e)
    return True


def _failed(e: Exception) -> NoReturn:
    """End as the typer command ends on `e` after its audit row (admin.cli_common's
    ProxyAdminGroup and click): a closed pipe silently with 1, an OSError or archive
    error as one error line with 1; anything else is a bug and keeps its traceback."""
    import errno

    from archive.errors import ArchiveError

    if isinstance(e, OSError) and e.errno == errno.EPIPE:
        os._exit(1)  # nothing more can be written to stdout (click: exit 1, no message)
    if not isinstance(e, OSError | ArchiveError):
        raise e
    from admin.cli_text import error_line
    from archive.errtext import describe

    sys.stderr.write(error_line(describe(e)) + "\n")
    sys.stderr.flush()
    os._exit(1)


def main() -> None:
    """Console-script entry point (`proxy-admin`)."""
    args = parse_search(sys.argv[1:])
    if args is not None and os.environ.get("MAILTEE_CLI_FULL") != "1":
        from admin import cli_exit, filemodes

        filemodes.restrict_umask()  # as admin.cli.main: the audit may create files
        cli_exit.reset()
        if search(args):
            cli_exit.exit_now(0)
            sys.exit(0)
    from admin.cli import main as full

    full()
