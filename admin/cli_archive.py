"""Archive commands of `proxy-admin`: ingest, search, show, export, import, user ...

Thin: each command opens `archive.store.Archive` for the configured state dir, calls one
library function and prints a table (people) or stable JSON (`--json`, docs/archive.md).
Library errors become one stderr line via `admin.cli_common.register_error`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from admin.cli_common import (
    JsonOpt,
    QueryCommand,
    context,
    fail,
    opened_archive,
    print_fields,
    print_json,
    print_table,
    progress,
    register_error,
    show_progress,
    terminal_safe,
    warn,
)
from admin.cli_exit import skip_teardown
from admin.cli_search import audited_search, search_output

register_error("archive.query:QueryError", 2)
register_error("archive.importer:ImportSourceError", 2)

#: archive.ldap_sync.LdapSettings.filter (a test checks they agree; not imported here
#: so that `--help` does not load ldap3)
LDAP_DEFAULT_FILTER = "(|(objectClass=inetOrgPerson)(objectClass=user))"

UserOpt = Annotated[
    str | None, typer.Option("--user", "-u", help="Only messages owned by this user.")
]

user_app = typer.Typer(
    help="Archive users: who owns which mail (manual, CSV, LDAP).", no_args_is_help=True
)


# --- ingest / import -------------------------------------------------------------------


def _stats_out(stats, json_out: bool, what: str) -> None:  # type: ignore[no-untyped-def]
    if json_out:
        print_json(stats.as_dict())
    else:
        typer.echo(_stats_line(stats, what))
        for err in stats.errors:
            warn(err)
    if stats.errors:
        raise typer.Exit(1)


def _stats_line(stats, what: str) -> str:  # type: ignore[no-untyped-def]
    """One summary line. For `import`, an item seen before (same source path and position)
    counts as already archived -- re-importing adds nothing and says so; for `ingest`,
    a report seen before carries news (its outcome), so updates are named."""
    if what == "imported":
        seen = stats.duplicates + stats.updated_reports
        if stats.new_messages == 0 and stats.reports:
            return f"imported {stats.reports} item(s): nothing new, all already archived"
        return (
            f"imported {stats.reports} item(s): {stats.new_messages} new message(s), "
            f"{seen} already archived"
        )
    return (
        f"{what} {stats.reports} item(s): {stats.new_messages} new message(s), "
        f"{stats.duplicates} already archived, {stats.updated_reports} report(s) updated "
        "(e.g. their outcome)"
    )


def ingest(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Process pending reports into the archive store, then exit."""
    c = context(ctx)
    with opened_archive(ctx) as archive:
        reports = c.state_dir(c.load_config()) / "reports"
        with progress("ingest", show_progress(json_out)) as cb:
            stats = archive.ingest_pending(reports, progress=cb)
    _stats_out(stats, json_out, "ingested")


def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Report dir, Maildir, .eml dir/file or mbox.")],
    json_out: JsonOpt = False,
) -> None:
    """Import existing mail (report directory, Maildir, directory of .eml, mbox)."""
    if not path.exists():
        fail(f"{path}: no such file or directory", 2)
    with opened_archive(ctx) as archive, progress("import", show_progress(json_out)) as cb:
        stats = archive.import_path(path, progress=cb)
    _stats_out(stats, json_out, "imported")


# --- search / show / export ----------------------------------------------------------


def search(
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(
            metavar="QUERY",
            help='Words, "phrases", from: to: subject: ..., -negation (docs/archive.md).',
        ),
    ],
    user: UserOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N hits.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Find archived messages, newest first (syntax: docs/archive.md)."""
    with opened_archive(ctx, state_only=True) as archive:
        hits, total = audited_search(archive, query, user, limit)
    skip_teardown()  # read-only, archive closed: exit without teardown (admin/cli_exit.py)
    out, err = search_output(hits, total, query, user, json_out)
    if out is not None:
        typer.echo(out)
    if err is not None:
        typer.echo(err, err=True)


def show(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(metavar="ID", help="Message ID or SHA-256.")],
    raw: Annotated[bool, typer.Option("--raw", help="The exact original bytes.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show one archived message: metadata, provenance, owners and text (or --raw)."""
    if not (message_id.isdigit() or len(message_id) == 64):
        fail(f"ID: {message_id!r} is not a message id or SHA-256", 2)
    with opened_archive(ctx, state_only=True) as archive:
        data = archive.get_raw(message_id)
        info = archive.get_message(message_id)
        archive.catalog.audit("show", {"id": info["id"], "raw": raw})
    skip_teardown()  # read-only, archive closed (admin/cli_exit.py)
    if raw:
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        return
    from archive import mime

    info["text"] = mime.parse(data).body
    if json_out:
        print_json(info)
        return
    pairs = [("id", info["id"]), ("date", info["date"]), ("from", info["from"])]
    for kind, values in info["addresses"].items():
        if kind != "from":
            pairs.append((kind, ", ".join(values)))
    pairs += [
        ("subject", info["subject"]),
        ("size", info["size"]),
        ("sha256", info["sha256"]),
        ("attachments", ", ".join(info["attachments"]) or "-"),
        ("owners", ", ".join(info["owners"]) or "-"),
    ]
    for r in info["reports"]:
        pairs.append(("report", _provenance(r)))
    print_fields(pairs)
    typer.echo("")
    typer.echo(terminal_safe(info["text"], multiline=True))


def _provenance(r: dict) -> str:  # type: ignore[type-arg]
    """One report as a person reads it: when, how, through what, for whom, outcome.

    `2026-11-24T10:00:00Z POP3 download, listener pop3, account alice, client 192.0.2.20:
    delivered` -- each fact once (not `pop3 pop3 pop3 user alice`)."""
    proto = (r.get("protocol") or "?").upper()
    how = {
        "outgoing": f"{proto} send",
        "incoming": f"{proto} download",
    }.get(r.get("direction") or "", proto if r.get("listener") else "import")
    parts = [how]
    if r.get("listener"):
        parts.append(f"listener {r['listener']}")
    elif r.get("source"):
        parts.append(f"from {r['source']}")
    if r.get("pop3_user"):
        parts.append(f"account {r['pop3_user']}")
    if r.get("client_ip"):
        parts.append(f"client {r['client_ip']}")
    return f"{r.get('received_at') or '-'} {', '.join(parts)}: {r.get('outcome') or '-'}"


def export(
    ctx: typer.Context,
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="Search query selecting what to export.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="eml (one file per message) or mbox.")
    ] = "eml",
    user: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export matching messages as .eml files or one mbox (exact original bytes)."""
    from archive.export import export as do_export

    if fmt not in ("eml", "mbox"):
        fail("--format: must be eml or mbox", 2)
    with opened_archive(ctx, state_only=True) as archive:
        _first, total = archive.search_page(query, user=user, limit=0)
        with progress("export", show_progress(json_out)) as cb:
            count, where = do_export(
                archive,
                archive.iter_matches(query, user=user),
                out,
                fmt,
                (lambda n: cb(n, total)) if cb else None,
            )
        archive.catalog.audit(
            "export", {"query": query, "user": user, "out": str(where), "count": count}
        )
    if json_out:
        print_json({"query": query, "format": fmt, "count": count, "path": str(where)})
    else:
        typer.echo(f"exported {count} message(s) to {where}")


# --- users -----------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (login).")],
    email: Annotated[
        list[str] | None, typer.Option("--email", "-e", help="An address (repeat).")
    ] = None,
    pop3_account: Annotated[
        list[str] | None,
        typer.Option("--pop3-account", help="A POP3 login that is this user's (repeat)."),
    ] = None,
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
) -> None:
    """Add a user owning every message to/from/cc/bcc one of their addresses, and every
    message downloaded with one of their POP3 accounts (give at least one of the two)."""
    from archive.users import UserError, UserSpec, add_user, check_address, check_name

    if not email and not pop3_account:
        fail("give at least one --email or --pop3-account", 2)
    try:
        check_name(name)
        addrs = [check_address(a) for a in email or []]
    except UserError as e:
        fail(str(e), 2)
    accounts = list(pop3_account or [])
    with opened_archive(ctx) as archive:
        add_user(archive.catalog, UserSpec(name, addrs, display_name, accounts))
    owned = [*addrs, *(f"POP3 {a}" for a in accounts)]
    typer.echo(f"added user {name} ({', '.join(owned)})")


@user_app.command("set")
def user_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    add_email: Annotated[
        list[str] | None, typer.Option("--add-email", help="Add an address (repeat).")
    ] = None,
    remove_email: Annotated[
        list[str] | None, typer.Option("--remove-email", help="Remove an address (repeat).")
    ] = None,
    add_pop3: Annotated[
        list[str] | None,
        typer.Option("--add-pop3-account", help="Add a POP3 login (repeat)."),
    ] = None,
    remove_pop3: Annotated[
        list[str] | None,
        typer.Option("--remove-pop3-account", help="Remove a POP3 login (repeat)."),
    ] = None,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="A new display name.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a user's addresses, POP3 accounts or display name; ownership of archived
    mail follows at once."""
    from archive.users import UserError, edit_user

    if not (add_email or remove_email or add_pop3 or remove_pop3 or display_name is not None):
        fail("nothing to change: give --add-email, --remove-email, --add-pop3-account, "
             "--remove-pop3-account or --display-name", 2)  # fmt: skip
    with opened_archive(ctx) as archive:
        try:
            result = edit_user(
                archive.catalog, name,
                add_addresses=add_email or [], remove_addresses=remove_email or [],
                add_pop3=add_pop3 or [], remove_pop3=remove_pop3 or [],
                display_name=display_name,
            )  # fmt: skip
        except UserError as e:
            fail(str(e), 2 if "would own nothing" in str(e) or "not an email" in str(e) else 1)
    if json_out:
        print_json(result)
        return
    typer.echo(
        f"changed user {name}: addresses {', '.join(result['addresses']) or '-'}; "
        f"POP3 {', '.join(result['pop3_accounts']) or '-'}"
    )
    if result["source"] != "manual":
        warn(
            f"{name} comes from {result['source']}: the next "
            f"{'sync-ldap' if result['source'] == 'ldap' else 'import-csv'} replaces this change"
        )


@user_app.command("list")
def user_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List users, their addresses and how many messages they own."""
    from archive.users import list_users

    with opened_archive(ctx) as archive:
        users = list_users(archive.catalog)
    if json_out:
        print_json(users)
        return
    rows = [
        (
            u["name"],
            u["source"],
            ", ".join(u["addresses"]),
            ", ".join(u["pop3_accounts"]) or "-",
            u["messages"],
        )
        for u in users
    ]
    print_table(("NAME", "SOURCE", "ADDRESSES", "POP3", "MESSAGES"), rows)


@user_app.command("remove")
def user_remove(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Remove a user (their archived mail stays; only ownership goes)."""
    from archive.users import remove_user

    with opened_archive(ctx) as archive:
        remove_user(archive.catalog, name)
    typer.echo(f"removed user {name}")


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the new password from stdin (one line; required)."
        ),
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the local password (no local login).")
    ] = False,
) -> None:
    """Set a user's local password (argon2id) for web access and local mail logins."""
    from archive.logins import check_password_text, clear_password, set_password
    from archive.users import UserError

    if clear == password_stdin:
        fail("give exactly one of --password-stdin or --clear", 2)
    with opened_archive(ctx) as archive:
        if clear:
            clear_password(archive.catalog, name)
            typer.echo(f"removed the local password of {name}")
            return
        password = sys.stdin.readline().rstrip("\r\n")
        try:
            check_password_text(password)
        except UserError as e:
            fail(str(e), 2)
        set_password(archive.catalog, name, password)
    typer.echo(f"set the local password of {name}")


@user_app.command("role")
def user_role(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[
        str, typer.Argument(help="user (own mail), auditor (all mail, read-only), admin.")
    ],
) -> None:
    """Set a user's role for web access (default: user)."""
    from archive.logins import ROLES, set_role

    if role not in ROLES:
        fail(f"role must be one of {', '.join(ROLES)}", 2)
    with opened_archive(ctx) as archive:
        set_role(archive.catalog, name, role)
    typer.echo(f"{name} is now {role}")


def _import_out(result, json_out: bool) -> None:  # type: ignore[no-untyped-def]
    if json_out:
        print_json(result.as_dict())
    else:
        typer.echo(
            f"{result.added} added, {result.updated} updated, {result.unchanged} unchanged, "
            f"{result.removed} removed, {len(result.errors)} rejected"
        )
        for err in result.errors:
            warn(err)
    if result.errors:
        raise typer.Exit(1)


@user_app.command("import-csv")
def user_import_csv(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV: name,email,display_name,pop3_account")],
    json_out: JsonOpt = False,
) -> None:
    """Create/update users from a CSV file; bad rows are reported, good rows kept."""
    from archive.users import import_csv

    if not file.is_file():
        fail(f"{file}: no such file", 2)
    with opened_archive(ctx) as archive:
        result = import_csv(archive.catalog, file)
    _import_out(result, json_out)


@user_app.command("sync-ldap")
def user_sync_ldap(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="ldap://host:389 or ldaps://host:636")],
    base_dn: Annotated[str, typer.Option("--base-dn", help="Where to search.")],
    bind_dn: Annotated[
        str | None, typer.Option("--bind-dn", help="Bind as (else anonymous).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the bind password from stdin.")
    ] = False,
    ldap_filter: Annotated[
        str, typer.Option("--filter", help="LDAP filter selecting the users.")
    ] = LDAP_DEFAULT_FILTER,
    name_attr: Annotated[
        str, typer.Option("--name-attr", help="User name attribute (AD: sAMAccountName).")
    ] = "uid",
    mail_attr: Annotated[
        list[str] | None,
        typer.Option("--mail-attr", help="Address attribute(s), e.g. mail, proxyAddresses."),
    ] = None,
    display_attr: Annotated[str, typer.Option("--display-attr")] = "cn",
    pop3_attr: Annotated[
        str | None, typer.Option("--pop3-attr", help="Attribute holding POP3 logins.")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune/--no-prune", help="Remove LDAP users no longer found.")
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Mirror users from LDAP / Active Directory (idempotent)."""
    from archive.ldap_sync import LdapSettings, sync

    c = context(ctx)
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif bind_dn:
        ldap_secrets = getattr(c.load_secrets(), "ldap", None) or {}
        password = ldap_secrets.get("bind_password") if isinstance(ldap_secrets, dict) else None
        if password is None:
            fail(
                "--bind-dn needs a password: --password-stdin (or [ldap] bind_password "
                "in secrets.toml)",
                2,
            )
    settings = LdapSettings(
        url=url,
        base_dn=base_dn,
        bind_dn=bind_dn,
        password=password,
        filter=ldap_filter,
        name_attr=name_attr,
        mail_attrs=tuple(mail_attr or ["mail"]),
        display_attr=display_attr or None,
        pop3_attr=pop3_attr,
    )
    with opened_archive(ctx) as archive:
        result = sync(archive.catalog, settings, prune=prune)
    _import_out(result, json_out)


def register(app: typer.Typer) -> None:
    """Mount the archive commands on the root `proxy-admin` app."""
    app.command("ingest")(ingest)
    app.command("search", cls=QueryCommand)(search)
    app.command("show")(show)
    app.command("export", cls=QueryCommand)(export)
    app.command("import")(import_)
    app.add_typer(user_app, name="user")
