"""Archive maintenance commands of `proxy-admin`: verify, compact, index rebuild,
store list|seal, backup, restore (docs/maintenance.md).

Thin: open the archive, call one function of archive.maintenance / archive.backup, print
a summary (people) or stable JSON (`--json`). Exit 0 ok, 1 failure (including damage
found by verify), 2 usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from admin.cli_common import (
    JsonOpt,
    context,
    existing_state_dir,
    fail,
    opened_archive,
    print_json,
    print_table,
    progress,
    show_progress,
    warn,
)

if TYPE_CHECKING:
    from archive import maintenance as mt


index_app = typer.Typer(help="The search index (rebuildable from packs + catalog).")
store_app = typer.Typer(help="Archive stores: list them, seal the current one.")


# --- verify ----------------------------------------------------------------------------


def verify(
    ctx: typer.Context,
    store: Annotated[
        int | None, typer.Option("--store", min=1, help="Only this store's blobs.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute every blob hash and the hash chain; check catalog, packs and index agree.

    Exit 1 listing the damaged message IDs if anything is wrong."""
    from archive import maintenance as mt

    with opened_archive(ctx) as archive, progress("verify", show_progress(json_out)) as cb:
        report = mt.verify(archive, store, cb)
    if json_out:
        print_json(report.as_dict())
    else:
        where = f"store {store}" if store is not None else "archive"
        for mid, problems in sorted(report.damaged.items()):
            for p in problems:
                typer.echo(f"damaged: message {mid}: {p}")
        for note in report.notes:
            warn(note)
        if report.ok:
            typer.echo(f"{where} ok: {report.messages} message(s) verified")
        else:
            ids = " ".join(str(i) for i in sorted(report.damaged))
            typer.echo(f"{where} DAMAGED: {len(report.damaged)} message(s): {ids}", err=True)
    if not report.ok:
        _alert_damage(ctx, report)
        raise typer.Exit(1)


def _alert_damage(ctx: typer.Context, report: mt.VerifyReport) -> None:
    """Verify failures are alerts (issue 6): logged, and mailed when [alerts] says so."""
    from proxy.alerts import send_alert_now

    config = context(ctx).load_config()
    ids = " ".join(str(i) for i in sorted(report.damaged))
    send_alert_now(
        config.alerts,
        config.hostname,
        "verify",
        f"archive verify found {len(report.damaged)} damaged message(s)",
        f"message ids: {ids}; run `proxy-admin verify` for details",
    )


# --- compact / index rebuild -----------------------------------------------------------


def compact(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Rewrite the live packs into full chunks, dropping unreferenced bytes (crash-safe)."""
    from archive import maintenance as mt

    with opened_archive(ctx) as archive, progress("compact", show_progress(json_out)) as cb:
        result = mt.compact(archive, cb)
    if json_out:
        print_json(result.as_dict())
    elif result.messages:
        typer.echo(
            f"compacted {result.messages} message(s): {result.packs_before} pack(s), "
            f"{result.bytes_before:,} bytes -> {result.packs_after} pack(s), "
            f"{result.bytes_after:,} bytes"
        )
    else:
        typer.echo("nothing to compact")


@index_app.command("rebuild")
def index_rebuild(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Recreate the search index from packs + catalog (also after a version change)."""
    from archive import maintenance as mt

    with (
        opened_archive(ctx, reset_index=True) as archive,
        progress("index", show_progress(json_out)) as cb,
    ):
        n = mt.rebuild_index(archive, cb)
    if json_out:
        print_json({"messages": n})
    else:
        typer.echo(f"indexed {n} message(s)")


# --- stores ----------------------------------------------------------------------------


@store_app.command("list")
def store_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List stores: sealed or current, packs, messages, size."""
    from archive import maintenance as mt

    with opened_archive(ctx) as archive:
        stores = mt.list_stores(archive)
    if json_out:
        print_json({"stores": [s.as_dict() for s in stores]})
        return
    rows = [
        (
            s.id,
            s.name,
            "current" if s.current else ("sealed" if s.sealed else "-"),
            s.messages,
            f"{s.pack_bytes:,}",
            ",".join(map(str, s.packs)) or "-",
            s.created_at[:19].replace("T", " "),
        )
        for s in stores
    ]
    print_table(("ID", "NAME", "STATE", "MESSAGES", "BYTES", "PACKS", "CREATED (UTC)"), rows)


@store_app.command("seal")
def store_seal(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Make the current store read-only; new mail goes to a new store (search spans all)."""
    from archive import maintenance as mt

    with opened_archive(ctx) as archive:
        sealed, new = mt.seal(archive)
    if json_out:
        print_json({"sealed": sealed.as_dict(), "current": new.as_dict()})
    else:
        typer.echo(
            f"sealed store {sealed.id} ({sealed.messages} message(s)); "
            f"new mail goes to store {new.id}"
        )


# --- backup / restore ------------------------------------------------------------------


def backup(
    ctx: typer.Context,
    dest: Annotated[Path, typer.Argument(help="New (or empty) directory for the backup.")],
    json_out: JsonOpt = False,
) -> None:
    """Back up the archive online (catalog snapshot, then packs, then a manifest)."""
    from archive import backup as bk

    if dest.exists() and not dest.is_dir():
        fail(f"DEST: {dest} is not a directory", 2)
    if dest.is_dir() and any(dest.iterdir()):
        fail(f"DEST: {dest} is not empty (back up into a new directory)", 2)
    with opened_archive(ctx) as archive, progress("backup", show_progress(json_out), "bytes") as cb:
        result = bk.backup(archive, dest, cb)
    if json_out:
        print_json(result.as_dict())
    else:
        typer.echo(
            f"backed up {result.messages} message(s), {result.files} file(s), "
            f"{result.bytes:,} bytes to {result.path}"
        )


def restore(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="A directory written by `backup`.")],
    json_out: JsonOpt = False,
) -> None:
    """Restore a backup into a state dir without an archive, rebuild the index, verify."""
    from archive import backup as bk

    if not src.is_dir():
        fail(f"SRC: {src}: no such directory", 2)
    state = existing_state_dir(ctx)
    with progress("restore", show_progress(json_out), "bytes") as cb:
        result = bk.restore(src, state, cb)
    if json_out:
        print_json(result.as_dict())
    else:
        typer.echo(
            f"restored {result.messages} message(s) into {result.path}; indexed {result.indexed}"
        )
    if result.verify is not None and not result.verify.ok:
        ids = " ".join(str(i) for i in sorted(result.verify.damaged))
        if not json_out:
            typer.echo(f"restored archive DAMAGED: message(s) {ids}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Mount the maintenance commands on the root `proxy-admin` app."""
    app.command("verify")(verify)
    app.command("compact")(compact)
    app.add_typer(index_app, name="index")
    app.add_typer(store_app, name="store")
    app.command("backup")(backup)
    app.command("restore")(restore)
