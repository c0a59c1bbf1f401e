"""`proxy-admin mailbox ...`: the IMAP/POP3 mailboxes `pull` archives (admin/cli_pull.py).

The mailbox password is read from stdin (first line) or the CSV file and stored only in
secrets.toml (0600); `show`/`list` print it as set / not set. `pull` prints one line per
mailbox (or a `--json` summary), shows a progress bar on a terminal, and exits 1 if any
mailbox failed — after pulling all the others. See docs/mailboxes.md.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from admin.cli_common import (
    CliContext,
    JsonOpt,
    audit,
    context,
    fail,
    print_fields,
    print_json,
    print_table,
    warn,
)
from admin.cli_listener import check_listener_name, parse_target, parse_tls_mode
from admin.cli_optionset import option_set

if TYPE_CHECKING:
    from pydantic import ValidationError

    from admin.config import Config, MailboxConfig, Secrets

mailbox_app = typer.Typer(
    help="Add, list, show, change and remove mailboxes that `pull` archives (IMAP/POP3).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(mailbox_app, name="mailbox")


# --- options ------------------------------------------------------------------------

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Mailbox name.")]
ProtocolOpt = Annotated[str | None, typer.Option("--protocol", metavar="imap|pop3")]
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", metavar="HOST[:PORT]", help="Mail server (port: 993/995 implicit "
                 "TLS, 143/110 otherwise)."),
]  # fmt: skip
TlsOpt = Annotated[
    str | None,
    typer.Option("--tls", metavar="implicit|starttls|none", help="TLS to the server.",
                 show_default="implicit"),
]  # fmt: skip
UserOpt = Annotated[str | None, typer.Option("--user", metavar="U", help="Login name.")]
AccountOpt = Annotated[
    str | None,
    typer.Option("--account", metavar="NAME", help="Log in with this OAuth2 account's token "
                 "(SASL XOAUTH2: Microsoft 365, Gmail) instead of a password; see "
                 "`proxy-admin account add`. \"\" (empty) goes back to the password."),
]  # fmt: skip
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first stdin line.")
]
FoldersOpt = Annotated[
    list[str] | None,
    typer.Option("--folders", metavar="F", help="IMAP folder to archive with its subfolders "
                 "(repeat the option; default: all)."),
]  # fmt: skip
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude-folders", metavar="F", help="IMAP folder to skip, with its "
                 "subfolders (repeat the option)."),
]  # fmt: skip
ArchiveUserOpt = Annotated[
    str | None,
    typer.Option("--archive-user", metavar="X", help="Archive user who owns all mail of this "
                 "mailbox (created when missing; '' to unset)."),
]  # fmt: skip
MultidropOpt = Annotated[
    bool | None,
    typer.Option("--multidrop/--no-multidrop", help="Catch-all mailbox: owners from the "
                 "headers (Delivered-To, X-Original-To, ..., To/Cc)."),
]  # fmt: skip
IntervalOpt = Annotated[
    str | None,
    typer.Option("--interval", metavar="DUR", help="`proxy-admin run` pulls this often "
                 "(15m, 1h, 1d; '' = never, the default)."),
]  # fmt: skip
DeleteOpt = Annotated[
    int | None,
    typer.Option("--delete-after-days", metavar="N", help="Delete at the server mail older "
                 "than N days once archived and verified (0 = never, the default)."),
]  # fmt: skip
CaOpt = Annotated[
    str | None, typer.Option("--ca", metavar="FILE", help="CA bundle for the server's certificate.")
]
NoVerifyOpt = Annotated[
    bool | None,
    typer.Option("--no-verify/--verify", help="Do not verify the server's certificate (unsafe)."),
]


def _read_password() -> str:
    line = typer.get_text_stream("stdin").readline()
    password = line.rstrip("\r\n")
    if not password:
        fail("--password-stdin: no password on the first line of stdin", 2)
    return password


def _validation(e: ValidationError) -> str:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "mailbox"
    return f"{loc}: {first['msg'].removeprefix('Value error, ')}"


def _build(data: dict[str, Any]) -> MailboxConfig:
    from pydantic import ValidationError

    from admin.config import MailboxConfig

    try:
        return MailboxConfig.model_validate(data)
    except ValidationError as e:
        fail(_validation(e), 2)


def _options(
    protocol: str | None,
    server: str | None,
    tls: str | None,
    user: str | None,
    folders: list[str] | None,
    exclude: list[str] | None,
    archive_user: str | None,
    multidrop: bool | None,
    interval: str | None,
    delete_after_days: int | None,
    ca: str | None,
    no_verify: bool | None,
    account: str | None = None,
) -> dict[str, Any]:
    """The changed fields, each option checked with a one-line error (exit 2)."""
    ch: dict[str, Any] = {}
    if protocol is not None:
        p = protocol.strip().lower()
        if p not in ("imap", "pop3"):
            fail(f"--protocol: must be imap or pop3, not {protocol!r}", 2)
        ch["protocol"] = p
    if server is not None:
        host, port = parse_target(server, "--server")
        ch["server"], ch["port"] = host, port
    if tls is not None:
        ch["tls"] = parse_tls_mode(tls, "--tls")
    if user is not None:
        if not user.strip() or any(c in user for c in "\r\n"):
            fail("--user: must not be empty", 2)
        ch["user"] = user
    if folders is not None:
        ch["folders"] = [f.strip("/") for f in folders if f.strip("/")]
    if exclude is not None:
        ch["exclude_folders"] = [f.strip("/") for f in exclude if f.strip("/")]
    if archive_user is not None:
        ch["archive_user"] = archive_user or None
    if multidrop is not None:
        ch["multidrop"] = multidrop
    if interval is not None:
        if interval:
            from admin.config import parse_duration

            try:
                parse_duration(interval)
            except ValueError as e:
                fail(f"--interval: {e}", 2)
        ch["interval"] = interval or None
    if delete_after_days is not None:
        if delete_after_days < 0:
            fail("--delete-after-days: must be 0 (never) or more", 2)
        ch["delete_after_days"] = delete_after_days or None
    if ca is not None:
        ch["ca"] = _ca_file(ca)
    if no_verify is not None:
        ch["verify"] = not no_verify
    if account is not None:
        ch["account"] = account or None
    return ch


def _check_account(config: Config, box: MailboxConfig) -> None:
    if problem := config.mailbox_account_problem(box):
        fail(f"--account: {problem} (see `proxy-admin account list`)", 2)


def _ca_file(value: str) -> str | None:
    if value == "":
        return None
    p = Path(value).expanduser()
    if not p.is_file():
        fail(f"--ca: {value}: no such file", 2)
    import ssl

    try:
        ssl.create_default_context(cafile=str(p))
    except (ssl.SSLError, OSError):
        fail(f"--ca: {value}: no PEM certificate in it", 2)
    return str(p.resolve())  # the service runs from another working directory


def _find(config: Config, name: str) -> int:
    for i, box in enumerate(config.mailbox):
        if box.name == name:
            return i
    fail(f"no mailbox named {name!r} (see `proxy-admin mailbox list`)", 1)


def _with_password(secrets: Secrets, name: str, password: str | None) -> Secrets:
    entries = {k: dict(v) for k, v in secrets.mailbox.items()}
    if password is None:
        entries.pop(name, None)
    else:
        entries.setdefault(name, {})["password"] = password
    return secrets.model_copy(update={"mailbox": entries})


def _ensure_users(c: CliContext, wanted: list[tuple[str, str | None]]) -> list[str]:
    """Create missing archive users (name, address); returns the names created."""
    from archive.store import Archive
    from archive.users import UserError, UserSpec, check_address, upsert_user

    state = c.state_dir(c.load_config())
    if not state.is_dir():
        warn(f"state dir {state} does not exist: archive users not created (run `init`)")
        return []
    created = []
    archive = Archive(state)
    try:
        for name, address in wanted:
            if archive.catalog.one("SELECT 1 FROM users WHERE name = ?", (name,)):
                continue
            addrs = []
            if address:
                try:
                    addrs = [check_address(address)]
                except UserError as e:
                    warn(f"user {name!r}: {e}; created without an address")
            try:
                upsert_user(archive.catalog, UserSpec(name, addrs), "mailbox")
            except UserError as e:
                warn(str(e))
                continue
            archive.catalog.audit("user.add", {"name": name, "addresses": addrs, "by": "mailbox"})
            created.append(name)
    finally:
        archive.close()
    return created


def _summary(box: MailboxConfig) -> str:
    extra = []
    if box.account:
        extra.append(f"OAuth2 account {box.account}")
    if box.multidrop:
        extra.append("multidrop")
    if box.archive_user:
        extra.append(f"archive user {box.archive_user}")
    if box.interval:
        extra.append(f"every {box.interval}")
    if box.delete_after_days:
        extra.append(f"delete after {box.delete_after_days} days")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{box.protocol} {box.user}@{box.server}:{box.port} tls {box.tls}{tail}"


# --- mailbox add / set / remove / list / show ---------------------------------------


class _Given(NamedTuple):
    """The arguments and options `mailbox add` and `mailbox set` share, declared once
    (admin/cli_optionset.py)."""

    name: NameArg
    protocol: ProtocolOpt = None
    server: ServerOpt = None
    tls: TlsOpt = None
    user: UserOpt = None
    account: AccountOpt = None
    password_stdin: PasswordStdinOpt = False
    folders: FoldersOpt = None
    exclude_folders: ExcludeOpt = None
    archive_user: ArchiveUserOpt = None
    multidrop: MultidropOpt = None
    interval: IntervalOpt = None
    delete_after_days: DeleteOpt = None
    ca: CaOpt = None
    no_verify: NoVerifyOpt = None

    def changes(self) -> dict[str, Any]:
        """The changed fields, each option checked with a one-line error (exit 2)."""
        return _options(self.protocol, self.server, self.tls, self.user, self.folders,
                        self.exclude_folders, self.archive_user, self.multidrop,
                        self.interval, self.delete_after_days, self.ca,
                        self.no_verify, self.account)  # fmt: skip


@mailbox_app.command("add")
@option_set(_Given)
def mailbox_add(ctx: typer.Context, given: _Given) -> None:
    """Add a mailbox to archive with `proxy-admin pull` (password from stdin)."""
    c = context(ctx)
    name, password_stdin = given.name, given.password_stdin
    check_listener_name(name)
    for opt, value in (("--protocol", given.protocol), ("--server", given.server),
                       ("--user", given.user)):  # fmt: skip
        if value is None:
            fail(f"{opt}: required", 2)
    if given.account and password_stdin:
        fail("--account and --password-stdin: a mailbox logs in with one of them", 2)
    if not password_stdin and not given.account:
        fail("--password-stdin: required (the password is read from stdin), or --account", 2)
    ch = given.changes()
    box = _build({"name": name, **ch})
    config = c.load_config()
    if any(b.name == name for b in config.mailbox):
        fail(f"mailbox {name!r} already exists (change it with `mailbox set`)", 1)
    _check_account(config, box)
    if password_stdin:
        c.save_secrets(_with_password(c.load_secrets(strict_mode=False), name, _read_password()))
    config.mailbox = [*config.mailbox, box]
    c.save_config(config)
    typer.echo(f"added mailbox {name!r}: {_summary(box)}")
    if box.archive_user:
        for u in _ensure_users(c, [(box.archive_user, None)]):
            typer.echo(f"created archive user {u!r}")
    audit(c, "mailbox.add", {"name": name, **ch, **({"password": "set"} if password_stdin else {})})


@mailbox_app.command("set")
@option_set(_Given)
def mailbox_set(ctx: typer.Context, given: _Given) -> None:
    """Change a mailbox's settings (only the options given)."""
    c = context(ctx)
    name, password_stdin = given.name, given.password_stdin
    config = c.load_config()
    i = _find(config, name)
    ch = given.changes()
    if not ch and not password_stdin:
        fail("nothing to change (see `proxy-admin mailbox set --help`)", 2)
    old = config.mailbox[i].model_dump()
    if "server" in ch and ch.get("port") is None:
        old.pop("port", None)  # a new server without a port gets the default port
    if "tls" in ch and "port" not in ch:
        old.pop("port", None)
    box = _build({**old, **ch})
    _check_account(config, box)
    if password_stdin:
        c.save_secrets(_with_password(c.load_secrets(strict_mode=False), name, _read_password()))
    config.mailbox = [*config.mailbox[:i], box, *config.mailbox[i + 1 :]]
    c.save_config(config)
    typer.echo(f"changed mailbox {name!r}: {_summary(box)}")
    if box.archive_user and "archive_user" in ch:
        for u in _ensure_users(c, [(box.archive_user, None)]):
            typer.echo(f"created archive user {u!r}")
    detail = {"name": name, **ch, **({"password": "changed"} if password_stdin else {})}
    audit(c, "mailbox.set", detail)


@mailbox_app.command("remove")
def mailbox_remove(ctx: typer.Context, name: NameArg) -> None:
    """Remove a mailbox and its stored password (archived mail stays archived)."""
    c = context(ctx)
    config = c.load_config()
    i = _find(config, name)
    config.mailbox = [*config.mailbox[:i], *config.mailbox[i + 1 :]]
    c.save_config(config)
    secrets = c.load_secrets(strict_mode=False)
    if name in secrets.mailbox:
        c.save_secrets(_with_password(secrets, name, None))
    typer.echo(f"removed mailbox {name!r}")
    audit(c, "mailbox.remove", {"name": name})


def _box_dict(c: CliContext, box: MailboxConfig) -> dict[str, Any]:
    d = box.model_dump(mode="json")
    try:
        has = c.load_secrets(strict_mode=False).mailbox_password(box.name) is not None
        d["password"] = "set" if has else "not set"
        if box.account is not None:
            d["password"] = "not used (OAuth2 account)"
    except OSError:
        d["password"] = "unknown (cannot read secrets.toml)"
    return d


@mailbox_app.command("list")
def mailbox_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the mailboxes as an aligned table (or JSON)."""
    c = context(ctx)
    config = c.load_config()
    if json_out:
        print_json([_box_dict(c, b) for b in config.mailbox])
        return
    if not config.mailbox:
        typer.echo("no mailboxes configured (add one with `proxy-admin mailbox add`)")
        return
    print_table(
        ["NAME", "PROTO", "SERVER", "TLS", "USER", "ARCHIVE-USER", "INTERVAL", "DELETE"],
        [
            (
                b.name,
                b.protocol + (" multidrop" if b.multidrop else ""),
                f"{b.server}:{b.port}",
                b.tls,
                b.user,
                b.archive_user or "-",
                b.interval or "-",
                f"{b.delete_after_days}d" if b.delete_after_days else "-",
            )
            for b in config.mailbox
        ],
    )


@mailbox_app.command("show")
def mailbox_show(ctx: typer.Context, name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one mailbox's settings (the password only as set / not set)."""
    c = context(ctx)
    config = c.load_config()
    d = _box_dict(c, config.mailbox[_find(config, name)])
    if json_out:
        print_json(d)
        return
    for k in ("folders", "exclude_folders"):
        d[k] = ", ".join(d[k]) or "(all)" if k == "folders" else ", ".join(d[k]) or "-"
    print_fields((k, "-" if v is None else v) for k, v in d.items())


# --- import-csv ---------------------------------------------------------------------

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def mailbox_name_for(user: str, taken: set[str]) -> str:
    """A config name for the mailbox of login `user` (e.g. alice@example.com ->
    alice-example-com), unique among `taken`."""
    base = _NAME_CHARS.sub("-", user).strip("-_")[:28] or "mailbox"
    if not base[0].isalnum():
        base = f"m{base}"[:28]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def read_csv(text: str) -> list[tuple[str, str, str | None, str | None]]:
    """Rows (IMAP user, password, e-mail, archive user) of a mailbox CSV.

    The first row is a header (any wording); columns are taken by position. The
    delimiter is `,`, `;` or a tab, whichever the header uses.
    """
    lines = text.lstrip("\ufeff").splitlines()
    if not lines:
        raise ValueError("the file is empty (a header row and one row per mailbox)")
    header = lines[0]
    delim = max(",;\t", key=header.count) if any(d in header for d in ",;\t") else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:])), delimiter=delim))
    out = []
    for n, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1]:
            raise ValueError(f"line {n}: needs at least an IMAP user and a password")
        email = row[2].strip() if len(row) > 2 and row[2].strip() else None
        owner = row[3].strip() if len(row) > 3 and row[3].strip() else None
        out.append((row[0].strip(), row[1], email, owner))
    return out


@mailbox_app.command("import-csv")
def mailbox_import_csv(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV: IMAP user, password, [e-mail], [archive user]; header row first.",
        ),
    ],
    server: ServerOpt = None,
    protocol: ProtocolOpt = None,
    tls: TlsOpt = None,
    folders: FoldersOpt = None,
    exclude_folders: ExcludeOpt = None,
    interval: IntervalOpt = None,
    delete_after_days: DeleteOpt = None,
    ca: CaOpt = None,
    no_verify: NoVerifyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add (or update) one mailbox per CSV row on one server; creates the archive users."""
    c = context(ctx)
    if server is None:
        fail("--server: required (HOST[:PORT] of the IMAP server)", 2)
    try:
        text = file.read_text("utf-8")
    except UnicodeDecodeError:
        fail(f"{file}: not UTF-8 text", 2)
    try:
        rows = read_csv(text)
    except ValueError as e:
        fail(f"{file}: {e}", 2)
    common = _options(protocol or "imap", server, tls, None, folders, exclude_folders, None,
                      None, interval, delete_after_days, ca, no_verify)  # fmt: skip
    config = c.load_config()
    secrets = c.load_secrets(strict_mode=False)
    by_user = {(b.server, b.user): b for b in config.mailbox}
    taken = {b.name for b in config.mailbox}
    boxes = list(config.mailbox)
    added, updated, users = [], [], []
    for user, password, email, owner in rows:
        owner = owner or user
        prev = by_user.get((common["server"], user))
        name = prev.name if prev else mailbox_name_for(user, taken)
        taken.add(name)
        box = _build({**(prev.model_dump() if prev else {}), "name": name, "user": user,
                      **common, "archive_user": owner})  # fmt: skip
        if prev:
            boxes[boxes.index(prev)] = box
            updated.append(name)
        else:
            boxes.append(box)
            added.append(name)
        secrets = _with_password(secrets, name, password)
        users.append((owner, email or (user if "@" in user else None)))
    config.mailbox = boxes
    c.save_secrets(secrets)
    c.save_config(config)
    created = _ensure_users(c, users)
    audit(c, "mailbox.import-csv", {"file": str(file), "added": added, "updated": updated,
                                    "users_created": created})  # fmt: skip
    if json_out:
        print_json({"added": added, "updated": updated, "users_created": created})
        return
    typer.echo(
        f"{len(added)} mailbox(es) added, {len(updated)} updated, "
        f"{len(created)} archive user(s) created"
    )
