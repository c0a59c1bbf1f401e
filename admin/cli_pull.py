"""`proxy-admin pull`: archive what is new in the configured mailboxes (docs/mailboxes.md).

One line per mailbox (failures on stderr) or a `--json` summary; a rich progress bar per
mailbox with rate and ETA on a terminal; exit 1 if any mailbox failed, after all the
others were pulled. Repeated failures of a mailbox raise the "pull" alert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from admin.cli_common import JsonOpt, context, fail, print_json, show_progress
from admin.cli_mailbox import _find

if TYPE_CHECKING:
    from admin.config import Config, Secrets


@contextlib.contextmanager
def _bars(show: bool) -> Iterator[Any]:
    """progress_for(name) for the runner: one rich bar per mailbox, rate and ETA."""
    if not show:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:  # type: ignore[no-untyped-def]
            return Text(f"{task.speed:,.0f} msg/s" if task.speed else "")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate())
    with Progress(*columns, TimeRemainingColumn(), transient=True) as bar:

        def progress_for(name: str) -> Any:
            task = bar.add_task(f"pull {name}", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or None)

            return update

        yield progress_for


def _human(r: dict[str, Any], dry_run: bool) -> str:
    if not r["ok"]:
        return f"{r['name']}: FAILED: {r['error']}"
    verb = "would archive" if dry_run else "archived"
    parts = [f"{r['name']}: {verb} {r['new']} message(s)"]
    if r["folders"] and len(r["folders"]) > 1:
        parts.append(f"in {len(r['folders'])} folders")
    if r["known"]:
        parts.append(f"({r['known']} seen before)")
    if not dry_run:
        parts.append(f"in {r['seconds']:.1f}s")
    line = " ".join(parts)
    if r["deleted"]:
        line += f"; deleted {r['deleted']} at the server"
    if r["would_delete"]:
        line += f"; would delete {len(r['would_delete'])} at the server"
    if r["delete_skipped"]:
        line += f"; {r['delete_skipped']}"
    return line


def pull(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAME ...]", help="Mailboxes (default: all).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only count what would be archived and list what would be deleted at the server.",
        ),
    ] = False,  # fmt: skip
    json_out: JsonOpt = False,
) -> None:
    """Archive what is new in the mailboxes; one failing mailbox does not stop the others."""
    from archive.pull.runner import pull_mailboxes, summary

    c = context(ctx)
    config = c.load_config()
    for n in names or []:
        _find(config, n)
    if not config.mailbox:
        fail("no mailboxes configured (add one with `proxy-admin mailbox add`)", 1)
    state = c.state_dir(config)
    if not state.is_dir():
        fail(f"state dir {state} does not exist (run `proxy-admin init`)")
    secrets = c.load_secrets()

    def alert(name: str, failures: int, error: str) -> None:
        from proxy.alerts import send_alert_now

        summary = f"mailbox {name}: {failures} pulls in a row failed"
        send_alert_now(config.alerts, config.hostname, "pull", summary, error)

    with _bars(show_progress(json_out)) as progress_for:
        results = pull_mailboxes(
            config,
            secrets,
            state,
            names or [],
            dry_run=dry_run,
            progress_for=progress_for,
            on_repeated_failure=alert,
            tokens=_tokens(c.config_path, config, secrets),
        )
    out = summary(results)
    out["dry_run"] = dry_run
    if json_out:
        print_json(out)
    else:
        for r in out["mailboxes"]:
            line = _human(r, dry_run)
            typer.echo(line, err=not r["ok"])
            if dry_run:
                for w in r["would_delete"]:
                    typer.echo(f"  would delete {w['folder'] or '(pop3)'} {w['ref']}")
    if not out["ok"]:
        raise typer.Exit(1)


def _tokens(
    config_path: Path, config: Config, secrets: Secrets
) -> Callable[[str], tuple[str, str]] | None:
    """OAuth2 tokens for the mailboxes with `account` (the accounts stack only then)."""
    if not any(b.account for b in config.mailbox):
        return None
    from accounts.blocking import token_source
    from accounts.store import TokenStore
    from admin.config import secrets_path

    return token_source(config, secrets, TokenStore.beside(secrets_path(config_path)))
