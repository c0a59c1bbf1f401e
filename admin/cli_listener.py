"""`proxy-admin listener ...`: add, list, show, change and remove listeners.

Every bad option value is one line naming the option (exit 2); the password for
`--target-user` is read from stdin and stored only in secrets.toml (0600).
"""

from __future__ import annotations

import ipaddress
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
    hostport,
    print_fields,
    print_json,
    print_table,
    reload_hint,
)
from admin.cli_optionset import option_set
from admin.paths import secrets_path

if TYPE_CHECKING:
    from admin.config import Config, ListenerConfig, Secrets

listener_app = typer.Typer(
    help="Add, list, show, change and remove listeners (client port -> provider).",
    no_args_is_help=True,
)


TLS_MODES = ("none", "starttls", "implicit")


def register(app: typer.Typer) -> None:
    app.add_typer(listener_app, name="listener")


# --- small parsers: each error is one line naming the option, exit 2 -----------------


def parse_target(value: str, option: str = "--target") -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address -> (host, port)."""
    v = value.strip()
    port_s: str | None = None
    if v.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", v)
        if m is None:
            fail(f"{option}: {value!r}: use [IPv6]:PORT", 2)
        host, port_s = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            fail(f"{option}: {host!r} is not an IPv6 address", 2)
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    else:
        host = v
        if ":" in v:
            try:
                ipaddress.IPv6Address(v)
            except ValueError:
                fail(f"{option}: {value!r} is not HOST[:PORT]", 2)
    if not host or not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        fail(f"{option}: {host!r} is not a host name or IP address", 2)
    if port_s is None:
        return host, None
    return host, parse_port(port_s, option)


def parse_port(value: str | int, option: str = "--port") -> int:
    try:
        port = int(value)
    except ValueError:
        fail(f"{option}: must be 1-65535", 2)
    if not 1 <= port <= 65535:
        fail(f"{option}: must be 1-65535", 2)
    return port


def parse_tls_mode(value: str, option: str) -> str:
    v = value.strip().lower()
    v = "starttls" if v == "stls" else v
    if v not in TLS_MODES:
        fail(f"{option}: must be none, starttls (or stls) or implicit, not {value!r}", 2)
    return v


def parse_ca_file(value: str) -> str | None:
    if value == "":
        return None
    p = Path(value).expanduser()
    if not p.exists():
        fail(f"--target-ca: {value}: no such file", 2)
    if not p.is_file():
        fail(f"--target-ca: {value}: not a file", 2)
    import ssl

    try:
        ssl.create_default_context(cafile=str(p))
    except ssl.SSLError:
        fail(f"--target-ca: {value}: no PEM certificate in it", 2)
    except OSError as e:
        fail(f"--target-ca: {value}: {e.strerror}", 2)
    # The service runs from another working directory: store an absolute path.
    return str(p.resolve())


def check_listener_name(name: str) -> str:
    from admin.config import LISTENER_NAME_RE

    if not LISTENER_NAME_RE.match(name):
        fail(f"NAME: {name!r}: must be 1-32 characters of letters, digits, '-' or '_'", 2)
    return name


# --- listener -----------------------------------------------------------------------

ProtocolOpt = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        metavar="smtp|pop3|smtp-journal",
        help="smtp or pop3 (relay to --target), or smtp-journal (receive and archive "
        "journal mail; no target).",
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        metavar="HOST[:PORT]",
        help="The provider's server. IPv6 as '[::1]:25'. The default port follows "
        "--target-tls (smtp 25/465, pop3 110/995).",
    ),
]
ListenOpt = Annotated[
    str | None,
    typer.Option(
        "--listen", metavar="IP", help="Local address to listen on.", show_default="0.0.0.0"
    ),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port",
        metavar="N",
        help="Local port. The default follows --protocol and --client-tls (25/465, 110/995).",
    ),
]
ClientTlsOpt = Annotated[
    str | None,
    typer.Option(
        "--client-tls",
        metavar="MODE",
        help="TLS offered to mail clients: none, starttls ('stls') or implicit.",
        show_default="none",
    ),
]
TargetTlsOpt = Annotated[
    str | None,
    typer.Option(
        "--target-tls",
        metavar="MODE",
        help="TLS towards the provider: none, starttls ('stls') or implicit.",
        show_default="none",
    ),
]
VerifyOpt = Annotated[
    bool | None,
    typer.Option(
        "--verify-target/--no-verify-target",
        help="Check the provider's certificate (default: verify).",
        show_default=False,
    ),
]
TargetCaOpt = Annotated[
    str | None,
    typer.Option(
        "--target-ca",
        metavar="FILE",
        help="PEM file of CA certificates to verify the provider with ('' to clear).",
    ),
]
TargetUserOpt = Annotated[
    str | None,
    typer.Option(
        "--target-user",
        metavar="U",
        help="smtp only: log in to the provider as U on every connection ('' to clear).",
    ),
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--target-password-stdin",
        help="Read the provider password for --target-user from the first line of stdin; "
        "it is stored in secrets.toml (0600).",
    ),
]
TargetAccountOpt = Annotated[
    str | None,
    typer.Option(
        "--target-account",
        metavar="NAME",
        help="OAuth2: log in to the provider as this account (`proxy-admin account add`) "
        "on every connection; smtp clients need not AUTH, pop3 clients log in with a local "
        "user's password ('' to clear).",
    ),
]
LocalLoginOpt = Annotated[
    bool | None,
    typer.Option(
        "--local-login/--no-local-login",
        help="OAuth2: clients log in with a local user's password (`user passwd`), over TLS "
        "only; mailtee then uses that person's account (the one whose email is one of the "
        "user's addresses, or --target-account).",
        show_default=False,
    ),
]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Listener name.", show_default=False)]

#: ListenerConfig field -> the option that sets it (for one-line validation errors).
_OPTION_FOR_FIELD = {
    "name": "NAME",
    "protocol": "--protocol",
    "listen": "--listen",
    "port": "--port",
    "client_tls": "--client-tls",
    "target_host": "--target",
    "target_port": "--target",
    "target_tls": "--target-tls",
    "target_verify": "--verify-target",
    "target_ca": "--target-ca",
    "target_user": "--target-user",
    "target_account": "--target-account",
    "local_login": "--local-login",
}


def _changes(
    *,
    protocol: str | None,
    target: str | None,
    listen: str | None,
    port: int | None,
    client_tls: str | None,
    target_tls: str | None,
    verify: bool | None,
    target_ca: str | None,
    target_user: str | None,
) -> dict[str, Any]:
    """Validate the given options; return the ListenerConfig fields they set."""
    ch: dict[str, Any] = {}
    if protocol is not None:
        p = protocol.strip().lower()
        if p not in ("smtp", "pop3", "smtp-journal"):
            fail(f"--protocol: must be smtp, pop3 or smtp-journal, not {protocol!r}", 2)
        ch["protocol"] = p
    if target is not None:
        ch["target_host"], ch["target_port"] = parse_target(target)
    if listen is not None:
        try:
            ch["listen"] = str(ipaddress.ip_address(listen.strip().strip("[]")))
        except ValueError:
            fail(f"--listen: {listen!r} is not an IP address", 2)
    if port is not None:
        ch["port"] = parse_port(port)
    if client_tls is not None:
        ch["client_tls"] = parse_tls_mode(client_tls, "--client-tls")
    if target_tls is not None:
        ch["target_tls"] = parse_tls_mode(target_tls, "--target-tls")
    if verify is not None:
        ch["target_verify"] = verify
    if target_ca is not None:
        ch["target_ca"] = parse_ca_file(target_ca)
    if target_user is not None:
        u = target_user.strip()
        if u and not all(ch_.isprintable() and not ch_.isspace() for ch_ in u):
            fail("--target-user: must not contain spaces or control characters", 2)
        ch["target_user"] = u or None
    return ch


def _oauth_changes(target_account: str | None, local_login: bool | None) -> dict[str, Any]:
    ch: dict[str, Any] = {}
    if target_account is not None:
        ch["target_account"] = target_account.strip() or None
    if local_login is not None:
        ch["local_login"] = local_login or None
    return ch


def _check_account(config: Config, lst: ListenerConfig) -> None:
    if lst.target_account and all(a.name != lst.target_account for a in config.account):
        fail(
            f"--target-account: no account named {lst.target_account!r} "
            "(add it with `proxy-admin account add`)",
            2,
        )


def _build_listener(data: dict[str, Any]) -> ListenerConfig:
    from pydantic import ValidationError

    from admin.config import ListenerConfig

    try:
        return ListenerConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        loc = [str(x) for x in err["loc"]]
        if loc:
            where = _OPTION_FOR_FIELD.get(loc[0], loc[0])
        elif "target_user" in msg:
            where, msg = "--target-user", "only for smtp listeners"
        else:
            where = "listener"
        fail(f"{where}: {msg}", 2)


def _read_password() -> str:
    stdin = typer.get_text_stream("stdin")
    line = stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        fail("--target-password-stdin: no password on the first line of stdin", 2)
    return password


def _apply_secret(
    c: CliContext, name: str, lst: ListenerConfig, password_stdin: bool
) -> tuple[Secrets | None, bool]:
    """Work out secrets.toml for listener `name`: (new Secrets or None if unchanged, added)."""
    if password_stdin and lst.target_user is None:
        fail("--target-password-stdin: needs --target-user", 2)
    secrets = c.load_secrets(strict_mode=False)
    entries = {k: dict(v) for k, v in secrets.listener.items()}
    if lst.target_user is None:
        if name in entries and "target_password" in entries[name]:
            entries[name].pop("target_password")
            if not entries[name]:
                del entries[name]
            return secrets.model_copy(update={"listener": entries}), False
        return None, False
    if password_stdin:
        entries.setdefault(name, {})["target_password"] = _read_password()
        return secrets.model_copy(update={"listener": entries}), True
    if not secrets.target_password(name):
        fail(
            f"--target-user: no password stored for listener {name!r}; "
            "give it with --target-password-stdin",
            2,
        )
    return None, False


def _save(c: CliContext, config: Config, secrets: Secrets | None, secrets_first: bool) -> None:
    # Order so that config.toml never names a user whose password is not stored yet.
    if secrets is not None and secrets_first:
        c.save_secrets(secrets)
    c.save_config(config)
    if secrets is not None and not secrets_first:
        c.save_secrets(secrets)


def _summary(lst: ListenerConfig) -> str:
    if lst.protocol == "smtp-journal":
        auth = ", AUTH with local passwords" if lst.local_login else ""
        where = hostport(lst.listen, lst.bind_port)
        return f"smtp-journal {where} (receive and archive only, client tls {lst.client_tls}{auth})"
    verify = "" if lst.target_verify else ", no verify"
    return (
        f"{lst.protocol} {hostport(lst.listen, lst.bind_port)} -> "
        f"{hostport(lst.target_host, lst.upstream_port)} "
        f"(client tls {lst.client_tls}, target tls {lst.target_tls}{verify})"
    )


class _Given(NamedTuple):
    """The arguments and options `listener add` and `listener set` share, declared once
    (admin/cli_optionset.py)."""

    name: NameArg
    protocol: ProtocolOpt = None
    target: TargetOpt = None
    listen: ListenOpt = None
    port: PortOpt = None
    client_tls: ClientTlsOpt = None
    target_tls: TargetTlsOpt = None
    verify: VerifyOpt = None
    target_ca: TargetCaOpt = None
    target_user: TargetUserOpt = None
    password_stdin: PasswordStdinOpt = False
    target_account: TargetAccountOpt = None
    local_login: LocalLoginOpt = None

    def changes(self) -> dict[str, Any]:
        """The ListenerConfig fields the given options set, each checked (exit 2)."""
        ch = _changes(
            protocol=self.protocol, target=self.target, listen=self.listen, port=self.port,
            client_tls=self.client_tls, target_tls=self.target_tls, verify=self.verify,
            target_ca=self.target_ca, target_user=self.target_user,
        )  # fmt: skip
        ch.update(_oauth_changes(self.target_account, self.local_login))
        return ch


@listener_app.command("add")
@option_set(_Given)
def listener_add(ctx: typer.Context, given: _Given) -> None:
    """Add a listener: a local port whose sessions are relayed to a provider and archived."""
    c = context(ctx)
    name, password_stdin = given.name, given.password_stdin
    check_listener_name(name)
    if given.protocol is None:
        fail("--protocol: required (smtp or pop3)", 2)
    if given.target is None and given.protocol != "smtp-journal":
        fail("--target: required (HOST[:PORT] of the provider)", 2)
    ch = given.changes()
    lst = _build_listener({"name": name, **ch})
    config = c.load_config()
    _check_account(config, lst)
    if any(x.name == name for x in config.listener):
        fail(f"listener {name!r} already exists (change it with `listener set`)", 1)
    _refuse_port_clash(config, lst)
    secrets, _ = _apply_secret(c, name, lst, password_stdin)
    config.listener = [*config.listener, lst]
    _save(c, config, secrets, secrets_first=True)
    typer.echo(f"added listener {name!r}: {_summary(lst)}")
    audit(c, "listener.add", _audit_detail(name, ch, password_stdin))
    reload_hint()


def _same_socket(a: ListenerConfig, b: ListenerConfig) -> bool:
    """Would `a` and `b` need the same TCP socket? Same port and the same address, or
    one of them is the wildcard of the other's family (Linux refuses 127.0.0.1:25 while
    0.0.0.0:25 listens). Port 0 means "any free port" and never clashes."""
    if not a.bind_port or a.bind_port != b.bind_port:
        return False
    ia, ib = ipaddress.ip_address(a.listen), ipaddress.ip_address(b.listen)
    if ia.version != ib.version:
        return False
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def _refuse_port_clash(config: Config, lst: ListenerConfig) -> None:
    """Exit 2 if another listener owns lst's address:port (`run` could not bind both)."""
    for other in config.listener:
        if other.name != lst.name and _same_socket(other, lst):
            fail(
                f"--port: listener {other.name!r} already listens on "
                f"{hostport(other.listen, other.bind_port)}; choose another --port or --listen",
                2,
            )


def _find(config: Config, name: str) -> int:
    for i, x in enumerate(config.listener):
        if x.name == name:
            return i
    fail(f"no listener named {name!r} (see `proxy-admin listener list`)", 1)


@listener_app.command("set")
@option_set(_Given)
def listener_set(ctx: typer.Context, given: _Given) -> None:
    """Change options of a listener; options not given keep their value."""
    c = context(ctx)
    name, password_stdin = given.name, given.password_stdin
    ch = given.changes()
    if not ch and not password_stdin:
        fail("nothing to change: give at least one option (see `listener set --help`)", 2)
    config = c.load_config()
    i = _find(config, name)
    old = config.listener[i]
    data = old.model_dump()
    from admin.config import default_port

    # A port that was the default for the old protocol/TLS mode follows the new one.
    if ({"protocol", "client_tls"} & ch.keys()) and "port" not in ch:
        if old.port == default_port(old.protocol, old.client_tls == "implicit"):
            data["port"] = None
    if ({"protocol", "target_tls"} & ch.keys()) and "target_port" not in ch:
        if old.target_port == default_port(old.protocol, old.target_tls == "implicit"):
            data["target_port"] = None
    data.update(ch)
    lst = _build_listener(data)
    _check_account(config, lst)
    _refuse_port_clash(config, lst)
    secrets, added = _apply_secret(c, name, lst, password_stdin)
    config.listener = [*config.listener[:i], lst, *config.listener[i + 1 :]]
    _save(c, config, secrets, secrets_first=added)
    typer.echo(f"changed listener {name!r}: {_summary(lst)}")
    audit(c, "listener.set", _audit_detail(name, ch, password_stdin))
    reload_hint()


def _audit_detail(name: str, changes: dict[str, Any], password: bool) -> dict[str, Any]:
    """What changed, for the audit log: option values, but never the password."""
    detail: dict[str, Any] = {"name": name, **changes}
    if password:
        detail["target_password"] = "changed"
    return detail


@listener_app.command("remove")
def listener_remove(ctx: typer.Context, name: NameArg) -> None:
    """Remove a listener and its stored provider password."""
    c = context(ctx)
    config = c.load_config()
    i = _find(config, name)
    config.listener = [*config.listener[:i], *config.listener[i + 1 :]]
    secrets = None
    if secrets_path(c.config_path).exists():
        current = c.load_secrets(strict_mode=False)
        if name in current.listener:
            kept = {k: v for k, v in current.listener.items() if k != name}
            secrets = current.model_copy(update={"listener": kept})
    _save(c, config, secrets, secrets_first=False)
    typer.echo(f"removed listener {name!r}")
    audit(c, "listener.remove", {"name": name})
    reload_hint()


def _password_state(c: CliContext, name: str) -> str:
    try:
        secrets = c.load_secrets(strict_mode=False)
    except OSError:
        return "unknown (cannot read secrets.toml)"
    return "set" if secrets.target_password(name) else "not set"


def _listener_dict(lst: ListenerConfig, password_state: str) -> dict[str, Any]:
    d = lst.model_dump(mode="json")
    d["target_password"] = password_state
    return d


@listener_app.command("list")
def listener_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the listeners as an aligned table (or JSON)."""
    c = context(ctx)
    config = c.load_config()
    if json_out:
        print_json([_listener_dict(x, _password_state(c, x.name)) for x in config.listener])
        return
    if not config.listener:
        typer.echo("no listeners configured (add one with `proxy-admin listener add`)")
        return
    print_table(
        ["NAME", "PROTO", "LISTEN", "TARGET", "CLIENT-TLS", "TARGET-TLS", "VERIFY", "USER"],
        [
            (
                x.name,
                x.protocol,
                hostport(x.listen, x.bind_port),
                "(journal)"
                if x.protocol == "smtp-journal"
                else hostport(x.target_host, x.upstream_port),
                x.client_tls,
                x.target_tls,
                "yes" if x.target_verify else "no",
                x.target_user or "-",
            )
            for x in config.listener
        ],
    )


@listener_app.command("show")
def listener_show(ctx: typer.Context, name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one listener's settings (the password only as set / not set)."""
    c = context(ctx)
    config = c.load_config()
    lst = config.listener[_find(config, name)]
    d = _listener_dict(lst, _password_state(c, name))
    if json_out:
        print_json(d)
        return
    order = [
        "name", "protocol", "listen", "port", "client_tls", "target_host", "target_port",
        "target_tls", "target_verify", "target_ca", "target_user", "target_password",
    ]  # fmt: skip
    if lst.target_account or lst.local_login:  # OAuth2 (docs/oauth2.md)
        order += ["target_account", "local_login"]
    human = {**d, "target_verify": "yes" if lst.target_verify else "no"}
    if lst.target_account or lst.local_login:
        human["local_login"] = "yes" if lst.local_login else "no"
    print_fields((k, "-" if human.get(k) is None else human[k]) for k in order)
