"""`proxy-admin`: the operator's command line (DESIGN, proxy-admin).

Thin commands over library code: admin.config (model, TOML), admin.tls_certs
(certificates), proxy.serve (the service). Errors the operator can cause are one stderr
line (`proxy-admin: error: ...`), exit 2 for a usage/config error and 1 for an
operational failure; see admin.cli_common.ProxyAdminGroup for where that happens.
The archive commands are registered from admin/cli_archive.py at the bottom.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import ssl
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from admin import tls_certs
from admin.cli_common import (
    CliContext,
    ProxyAdminGroup,
    context,
    fail,
    print_fields,
    print_json,
    print_table,
    register_error,
    setup_logging,
    warn,
)
from admin.config import (
    LISTENER_NAME_RE,
    Config,
    ListenerConfig,
    Secrets,
    check_secrets,
    default_port,
    resolve_config_path,
    secrets_path,
)

register_error(tls_certs.CertError, 1)

app = typer.Typer(
    cls=ProxyAdminGroup,
    name="proxy-admin",
    help="Administer mailtee, the transparent POP3/SMTP archiving proxy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold passwords (invariant 5)
    context_settings={"help_option_names": ["-h", "--help"]},
)
listener_app = typer.Typer(
    help="Add, list, show, change and remove listeners (client port -> provider).",
    no_args_is_help=True,
)
tls_app = typer.Typer(
    help="The proxy's own TLS certificate (state_dir/tls/cert.pem and key.pem).",
    no_args_is_help=True,
)
app.add_typer(listener_app, name="listener")
app.add_typer(tls_app, name="tls")

#: `init --demo` listeners: the proxy's ports in front of the demo provider's.
DEMO_SMTP_PORT = 2525
DEMO_POP3_PORT = 2110
#: How long `status` waits for a port to accept a connection.
PROBE_TIMEOUT = 0.5
TLS_MODES = ("none", "starttls", "implicit")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="MAILTEE_CONFIG",
            metavar="PATH",
            help="config.toml to use (secrets.toml is read from the same folder).",
            show_default="/etc/mailtee/config.toml",
        ),
    ] = None,
) -> None:
    """Administer mailtee, the transparent POP3/SMTP archiving proxy."""
    ctx.obj = CliContext(resolve_config_path(config))


def main() -> None:
    """Console-script entry point (`proxy-admin`)."""
    app(prog_name="proxy-admin")


# --- small parsers: each error is one line naming the option, exit 2 -----------------


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    try:
        ssl.create_default_context(cafile=str(p))
    except ssl.SSLError:
        fail(f"--target-ca: {value}: no PEM certificate in it", 2)
    except OSError as e:
        fail(f"--target-ca: {value}: {e.strerror}", 2)
    # The service runs from another working directory: store an absolute path.
    return str(p.resolve())


def check_listener_name(name: str) -> str:
    if not LISTENER_NAME_RE.match(name):
        fail(f"NAME: {name!r}: must be 1-32 characters of letters, digits, '-' or '_'", 2)
    return name


# --- init ---------------------------------------------------------------------------


def _default_hostname(demo: bool) -> str:
    if demo:
        return "localhost"
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    return Config().hostname


def _config_arg(c: CliContext) -> str:
    """`--config X ` when the config is not the default one, for printed next steps."""
    if c.config_path == resolve_config_path(None):
        return ""
    return f"--config {c.config_path} "


@app.command()
def init(
    ctx: typer.Context,
    state_dir: Annotated[
        str | None,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="Reports, archive and TLS files. A relative path is relative to the "
            "config file's folder.",
            show_default="/var/lib/mailtee",
        ),
    ] = None,
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname",
            metavar="NAME",
            help="Name the clients use for this gateway (EHLO name, certificate).",
            show_default="this host's FQDN",
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help=f"Enable the built-in demo provider and add listeners smtp "
            f"({DEMO_SMTP_PORT}) and pop3 ({DEMO_POP3_PORT}) on 127.0.0.1 in front of it.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite an existing config.toml and secrets.toml."),
    ] = False,
) -> None:
    """Create config.toml, secrets.toml, the state directory and a self-signed certificate."""
    c = context(ctx)
    if c.config_path.exists() and not force:
        fail(f"{c.config_path} already exists; use --force to overwrite it", 1)
    host = hostname if hostname is not None else _default_hostname(demo)
    try:
        host = tls_certs.check_hostname(host)
    except tls_certs.CertError as e:
        fail(f"--hostname: {e}", 2)
    if state_dir is not None and not state_dir.strip():
        fail("--state-dir: must not be empty", 2)

    config = Config(hostname=host)
    if state_dir is not None:
        config.state_dir = state_dir
    if demo:
        config.demo.enabled = True
        config.listener = [
            ListenerConfig(
                name="smtp",
                protocol="smtp",
                listen="127.0.0.1",
                port=DEMO_SMTP_PORT,
                target_host="127.0.0.1",
                target_port=config.demo.smtp_port,
                target_tls="none",
            ),
            ListenerConfig(
                name="pop3",
                protocol="pop3",
                listen="127.0.0.1",
                port=DEMO_POP3_PORT,
                target_host="127.0.0.1",
                target_port=config.demo.pop3_port,
                target_tls="none",
            ),
        ]

    sd = c.state_dir(config)
    for sub in ("", "reports", "archive", tls_certs.TLS_DIR_NAME):
        (sd / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(tls_certs.tls_dir(sd), 0o700)

    cert, key = tls_certs.server_context_paths(sd)
    if cert.exists() and key.exists():
        cert_note = "kept the existing one"
    else:
        extra = ("localhost", "127.0.0.1", "::1") if demo else ()
        tls_certs.make_self_signed(host, cert, key, extra_names=extra)
        cert_note = f"self-signed for {host}"

    spath = secrets_path(c.config_path)
    if force or not spath.exists():
        c.save_secrets(Secrets())
        secrets_note = "empty, mode 0600"
    else:
        os.chmod(spath, 0o600)
        secrets_note = "kept the existing one, mode 0600"
    c.save_config(config)  # last: a failed init leaves no config behind and can be re-run

    fingerprint = tls_certs.describe(cert)["sha256"]
    typer.echo(f"Created {c.config_path}")
    print_fields(
        [
            ("  secrets", f"{spath} ({secrets_note})"),
            ("  state dir", f"{sd} (reports/, archive/, tls/)"),
            ("  certificate", f"{cert} ({cert_note})"),
            ("  sha256", fingerprint),
        ]
    )
    _print_next_steps(c, config, demo)


def _print_next_steps(c: CliContext, config: Config, demo: bool) -> None:
    pa = f"proxy-admin {_config_arg(c)}"
    typer.echo("")
    if demo:
        typer.echo(
            f"Demo provider: SMTP 127.0.0.1:{config.demo.smtp_port}, "
            f"POP3 127.0.0.1:{config.demo.pop3_port} (started by `run`)."
        )
        for lst in config.listener:
            typer.echo(
                f"Listener {lst.name}: 127.0.0.1:{lst.bind_port} -> "
                f"{_hostport(lst.target_host, lst.upstream_port)}"
            )
        typer.echo("\nNext:")
        typer.echo(f"  {pa}run")
        typer.echo(
            f"  swaks --server 127.0.0.1:{DEMO_SMTP_PORT} --from you@example.com "
            "--to alice@example.com"
        )
        typer.echo(
            f"  read it back over POP3 at 127.0.0.1:{DEMO_POP3_PORT}, user alice@example.com, "
            "any password"
        )
        typer.echo(f"  {pa}status")
    else:
        typer.echo("Next:")
        typer.echo(
            f"  {pa}listener add smtp --protocol smtp --target smtp.example.net:587 "
            "--target-tls starttls"
        )
        typer.echo(
            f"  {pa}listener add pop3 --protocol pop3 --target pop.example.net:995 "
            "--target-tls implicit"
        )
        typer.echo(f"  {pa}run      (or: systemctl enable --now mailtee)")


# --- run ----------------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _preflight_tls(c: CliContext, config: Config) -> None:
    if not any(lst.client_tls != "none" for lst in config.listener):
        return
    cert, key = tls_certs.server_context_paths(c.state_dir(config))
    for path in (cert, key):
        if not path.is_file():
            fail(
                f"{path}: missing, and a listener offers TLS to clients; create one with "
                "`proxy-admin tls self-signed` or `proxy-admin tls import`",
                1,
            )


@app.command()
def run(ctx: typer.Context) -> None:
    """Run the proxy in the foreground (systemd's ExecStart). SIGHUP reloads the config."""
    c = context(ctx)
    config = c.load_config()
    secrets = c.load_secrets(strict_mode=True)
    check_secrets(config, secrets)
    _preflight_tls(c, config)
    try:
        from proxy import serve
    except ModuleNotFoundError as e:
        if e.name != "proxy.serve":
            raise
        fail("this installation has no proxy service (proxy/serve.py is missing)", 1)
    from proxy.errors import ProxyError

    register_error(ProxyError, 1)  # e.g. a port in use: one line, exit 1
    import trio

    handler = setup_logging(config.log_level)
    try:
        trio.run(serve.run_service, config, secrets, c.config_path)
    except BaseException as e:
        others = [x for x in _leaves(e) if not isinstance(x, KeyboardInterrupt)]
        if not others:  # Ctrl-C, possibly wrapped in exception groups by nurseries
            typer.echo("proxy-admin: stopped", err=True)
            return
        if len(others) == 1 and others[0] is not e:
            raise others[0] from None  # one error out of a group: one line if expected
        raise
    finally:
        logging.getLogger().removeHandler(handler)


# --- status -------------------------------------------------------------------------


_PROC_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_TCP_LISTEN = "0A"


def _proc_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(raw)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def listening_sockets() -> set[tuple[str, int]] | None:
    """(address, port) of every listening TCP socket, from /proc; None if unavailable."""
    found: set[tuple[str, int]] = set()
    try:
        for table in _PROC_TCP:
            if not table.exists():
                continue
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == _TCP_LISTEN:
                    addr, port = fields[1].rsplit(":", 1)
                    found.add((_proc_address(addr), int(port, 16)))
    except (OSError, ValueError):
        return None
    return found if any(t.exists() for t in _PROC_TCP) else None


def _probe(host: str, port: int | None, listening: set[tuple[str, int]] | None) -> bool | None:
    """Is something listening on host:port right now? None when it cannot be told.

    Linux: read the kernel's socket table, which has no side effects (a test connection to
    a proxy port would make the proxy open a provider session). Elsewhere: a TCP connect.
    """
    if not port:
        return None
    if listening is not None:
        wildcard = {(a, port) for a in ("0.0.0.0", "::")}
        return (host, port) in listening or bool(wildcard & listening)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def count_reports(reports_dir: Path) -> int | None:
    """`.mpr` files in the report directory (hidden temp files excluded); None if absent."""
    try:
        return sum(
            1 for p in reports_dir.iterdir() if p.suffix == ".mpr" and not p.name.startswith(".")
        )
    except FileNotFoundError:
        return None


def _yes_no(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def service_status(state_dir: Path) -> dict[str, Any] | None:
    """The running service's own status over its control socket; None if it is not up."""
    try:
        from proxy import control
    except ModuleNotFoundError:
        return None
    try:
        reply = control.request(control.socket_path(state_dir), "status", timeout=3.0)
    except (OSError, control.ControlError):
        return None
    status = reply.get("status") if reply.get("ok") else None
    return status if isinstance(status, dict) else None


def _megabytes(n: int | None) -> str:
    return "?" if n is None else f"{n // (1024 * 1024)} MB"


def _service_fields(svc: dict[str, Any]) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        (
            "service",
            f"running (pid {svc.get('pid')}, since {svc.get('started_at')}), "
            f"{svc.get('active_sessions', 0)} active session(s)",
        ),
        (
            "free disk",
            f"{_megabytes(svc.get('disk_free_bytes'))} (alert below {svc.get('low_disk_mb')} MB)",
        ),
        ("archive failures", svc.get("archive_failures", 0)),
    ]
    draining = svc.get("draining") or {}
    if draining:
        fields.append(("draining", ", ".join(f"{k} ({v})" for k, v in sorted(draining.items()))))
    reload = svc.get("last_reload")
    if reload:
        fields.append(
            ("last reload", f"{reload.get('at')}, {len(reload.get('errors', []))} error(s)")
        )
    for err in svc.get("last_errors", [])[-5:]:
        fields.append(("error", f"{err.get('at')} {err.get('kind')}: {err.get('summary')}"))
    return fields


@app.command()
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show listeners, sessions, the report backlog, recent errors and free disk space.

    While the service runs it answers through its control socket (state_dir/control.sock);
    otherwise the ports are checked from outside.
    """
    c = context(ctx)
    config = c.load_config()
    sd = c.state_dir(config)
    svc = service_status(sd)
    running = {x["name"]: x for x in (svc or {}).get("listeners", [])}
    listening = listening_sockets()
    listeners = []
    for lst in config.listener:
        live = running.get(lst.name)
        listeners.append(
            {
                "name": lst.name,
                "protocol": lst.protocol,
                "listen": lst.listen,
                "port": live["port"] if live else lst.port,
                "target_host": lst.target_host,
                "target_port": lst.target_port,
                "client_tls": lst.client_tls,
                "target_tls": lst.target_tls,
                "accepting": True if live else _probe(lst.listen, lst.port, listening),
                "active_sessions": live.get("active_sessions") if live else None,
            }
        )
    demo: dict[str, Any] = {"enabled": config.demo.enabled}
    if config.demo.enabled:
        demo.update(
            smtp_port=config.demo.smtp_port,
            pop3_port=config.demo.pop3_port,
            smtp_accepting=_probe("127.0.0.1", config.demo.smtp_port, listening),
            pop3_accepting=_probe("127.0.0.1", config.demo.pop3_port, listening),
        )
    pending = svc["reports_pending"] if svc else count_reports(sd / "reports")
    service: dict[str, Any] = {"running": False}
    if svc:
        service = {"running": True, **{k: v for k, v in svc.items() if k != "listeners"}}
    if json_out:
        print_json(
            {
                "config": str(c.config_path),
                "state_dir": str(sd),
                "reports_pending": pending,
                "listeners": listeners,
                "demo": demo,
                "service": service,
            }
        )
        return
    backlog = "no reports directory" if pending is None else f"{pending} .mpr waiting for ingest"
    fields: list[tuple[str, Any]] = [("config", c.config_path), ("state dir", sd)]
    if svc:
        fields += _service_fields(svc)
    else:
        fields.append(("service", "not running (no answer on the control socket)"))
    fields.append(("reports", backlog))
    if config.demo.enabled:
        fields.append(
            (
                "demo provider",
                f"SMTP 127.0.0.1:{demo['smtp_port']} ({_yes_no(demo['smtp_accepting'])}), "
                f"POP3 127.0.0.1:{demo['pop3_port']} ({_yes_no(demo['pop3_accepting'])})",
            )
        )
    print_fields(fields)
    typer.echo("")
    if not listeners:
        typer.echo("no listeners configured (add one with `proxy-admin listener add`)")
        return
    print_table(
        ["NAME", "PROTO", "LISTEN", "TARGET", "CLIENT-TLS", "TARGET-TLS", "ACTIVE", "ACCEPTING"],
        [
            (
                lst["name"],
                lst["protocol"],
                _hostport(lst["listen"], lst["port"]),
                _hostport(lst["target_host"], lst["target_port"]),
                lst["client_tls"],
                lst["target_tls"],
                "-" if lst["active_sessions"] is None else lst["active_sessions"],
                _yes_no(lst["accepting"]),
            )
            for lst in listeners
        ],
    )


# --- listener -----------------------------------------------------------------------

ProtocolOpt = Annotated[
    str | None, typer.Option("--protocol", metavar="smtp|pop3", help="smtp or pop3.")
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
        if p not in ("smtp", "pop3"):
            fail(f"--protocol: must be smtp or pop3, not {protocol!r}", 2)
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


def _build_listener(data: dict[str, Any]) -> ListenerConfig:
    from pydantic import ValidationError

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
            return Secrets(listener=entries), False
        return None, False
    if password_stdin:
        entries.setdefault(name, {})["target_password"] = _read_password()
        return Secrets(listener=entries), True
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
    verify = "" if lst.target_verify else ", no verify"
    return (
        f"{lst.protocol} {_hostport(lst.listen, lst.bind_port)} -> "
        f"{_hostport(lst.target_host, lst.upstream_port)} "
        f"(client tls {lst.client_tls}, target tls {lst.target_tls}{verify})"
    )


def _reload_hint() -> None:
    typer.echo("A running service applies this on reload (systemctl reload mailtee).")


@listener_app.command("add")
def listener_add(
    ctx: typer.Context,
    name: NameArg,
    protocol: ProtocolOpt = None,
    target: TargetOpt = None,
    listen: ListenOpt = None,
    port: PortOpt = None,
    client_tls: ClientTlsOpt = None,
    target_tls: TargetTlsOpt = None,
    verify: VerifyOpt = None,
    target_ca: TargetCaOpt = None,
    target_user: TargetUserOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Add a listener: a local port whose sessions are relayed to a provider and archived."""
    c = context(ctx)
    check_listener_name(name)
    if protocol is None:
        fail("--protocol: required (smtp or pop3)", 2)
    if target is None:
        fail("--target: required (HOST[:PORT] of the provider)", 2)
    ch = _changes(
        protocol=protocol, target=target, listen=listen, port=port, client_tls=client_tls,
        target_tls=target_tls, verify=verify, target_ca=target_ca, target_user=target_user,
    )  # fmt: skip
    lst = _build_listener({"name": name, **ch})
    config = c.load_config()
    if any(x.name == name for x in config.listener):
        fail(f"listener {name!r} already exists (change it with `listener set`)", 1)
    clash = _port_clash(config, lst)
    secrets, _ = _apply_secret(c, name, lst, password_stdin)
    config.listener = [*config.listener, lst]
    _save(c, config, secrets, secrets_first=True)
    typer.echo(f"added listener {name!r}: {_summary(lst)}")
    if clash:
        warn(clash)
    _reload_hint()


def _port_clash(config: Config, lst: ListenerConfig) -> str | None:
    for other in config.listener:
        if other.name != lst.name and other.bind_port == lst.bind_port:
            if other.listen == lst.listen or "0.0.0.0" in (other.listen, lst.listen):
                return f"listener {other.name!r} also uses port {lst.bind_port}"
    return None


def _find(config: Config, name: str) -> int:
    for i, x in enumerate(config.listener):
        if x.name == name:
            return i
    fail(f"no listener named {name!r} (see `proxy-admin listener list`)", 1)


@listener_app.command("set")
def listener_set(
    ctx: typer.Context,
    name: NameArg,
    protocol: ProtocolOpt = None,
    target: TargetOpt = None,
    listen: ListenOpt = None,
    port: PortOpt = None,
    client_tls: ClientTlsOpt = None,
    target_tls: TargetTlsOpt = None,
    verify: VerifyOpt = None,
    target_ca: TargetCaOpt = None,
    target_user: TargetUserOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Change options of a listener; options not given keep their value."""
    c = context(ctx)
    ch = _changes(
        protocol=protocol, target=target, listen=listen, port=port, client_tls=client_tls,
        target_tls=target_tls, verify=verify, target_ca=target_ca, target_user=target_user,
    )  # fmt: skip
    if not ch and not password_stdin:
        fail("nothing to change: give at least one option (see `listener set --help`)", 2)
    config = c.load_config()
    i = _find(config, name)
    old = config.listener[i]
    data = old.model_dump()
    # A port that was the default for the old protocol/TLS mode follows the new one.
    if ({"protocol", "client_tls"} & ch.keys()) and "port" not in ch:
        if old.port == default_port(old.protocol, old.client_tls == "implicit"):
            data["port"] = None
    if ({"protocol", "target_tls"} & ch.keys()) and "target_port" not in ch:
        if old.target_port == default_port(old.protocol, old.target_tls == "implicit"):
            data["target_port"] = None
    data.update(ch)
    lst = _build_listener(data)
    clash = _port_clash(config, lst)
    secrets, added = _apply_secret(c, name, lst, password_stdin)
    config.listener = [*config.listener[:i], lst, *config.listener[i + 1 :]]
    _save(c, config, secrets, secrets_first=added)
    typer.echo(f"changed listener {name!r}: {_summary(lst)}")
    if clash:
        warn(clash)
    _reload_hint()


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
            secrets = Secrets(listener={k: v for k, v in current.listener.items() if k != name})
    _save(c, config, secrets, secrets_first=False)
    typer.echo(f"removed listener {name!r}")
    _reload_hint()


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
                _hostport(x.listen, x.bind_port),
                _hostport(x.target_host, x.upstream_port),
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
    human = {**d, "target_verify": "yes" if lst.target_verify else "no"}
    print_fields((k, "-" if human.get(k) is None else human[k]) for k in order)


# --- tls ----------------------------------------------------------------------------


def _tls_paths(c: CliContext) -> tuple[Config, Path, Path]:
    config = c.load_config()
    cert, key = tls_certs.server_context_paths(c.state_dir(config))
    return config, cert, key


def _hostname_or_fail(hostname: str) -> str:
    try:
        return tls_certs.check_hostname(hostname)
    except tls_certs.CertError as e:
        fail(f"--hostname: {e}", 2)


def _print_cert(info: dict[str, Any], key: str | None = None) -> None:
    fields = [
        ("certificate", info["path"]),
        ("subject", info["subject"]),
        ("issuer", info["issuer"] + (" (self-signed)" if info["self_signed"] else "")),
        ("names", ", ".join(info["sans"]) or "-"),
        ("not before", info["not_before"]),
        ("not after", info["not_after"] + (" (EXPIRED)" if info["expired"] else "")),
        ("sha256", info["sha256"]),
    ]
    if key is not None:
        fields.append(("key", key))
    print_fields(fields)


HostnameOpt = Annotated[
    str | None,
    typer.Option(
        "--hostname",
        "-H",
        metavar="H",
        help="Name the clients connect to.",
        show_default="hostname from config.toml",
    ),
]


@tls_app.command("show")
def tls_show(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show subject, issuer, names, expiry and SHA-256 fingerprint of the certificate."""
    c = context(ctx)
    _, cert, key = _tls_paths(c)
    if not cert.exists():
        fail(f"{cert}: no certificate yet (create one with `proxy-admin tls self-signed`)", 1)
    info = tls_certs.describe(cert)
    info["key"] = str(key)
    info["key_matches"] = tls_certs.key_matches(cert, key) if key.exists() else False
    if json_out:
        print_json(info)
        return
    _print_cert(info, key=f"{key} ({'matches' if info['key_matches'] else 'DOES NOT MATCH'})")


@tls_app.command("self-signed")
def tls_self_signed(ctx: typer.Context, hostname: HostnameOpt = None) -> None:
    """Replace the certificate and key with a new self-signed pair."""
    c = context(ctx)
    config, cert, key = _tls_paths(c)
    host = _hostname_or_fail(hostname or config.hostname)
    cert.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert.parent, 0o700)
    tls_certs.make_self_signed(host, cert, key)
    _print_cert(tls_certs.describe(cert))
    _reload_hint()


@tls_app.command("csr")
def tls_csr(
    ctx: typer.Context,
    out: Annotated[
        str,
        typer.Option("--out", "-o", metavar="F", help="Where to write the PEM CSR ('-' = stdout)."),
    ],
    hostname: HostnameOpt = None,
) -> None:
    """Write a certificate signing request for the existing key (for a CA to sign)."""
    c = context(ctx)
    config, cert, key = _tls_paths(c)
    host = _hostname_or_fail(hostname or config.hostname)
    if not key.exists():
        fail(f"{key}: no key yet (create one with `proxy-admin tls self-signed`)", 1)
    csr = tls_certs.make_csr(key, host)
    if out == "-":
        sys.stdout.write(csr.decode())
        sys.stdout.flush()
        return
    Path(out).write_bytes(csr)
    typer.echo(f"wrote a CSR for {host} to {out}")
    typer.echo(
        f"When the CA has signed it: proxy-admin {_config_arg(c)}tls import SIGNED.pem {key}"
    )


@tls_app.command("import")
def tls_import(
    ctx: typer.Context,
    cert_file: Annotated[
        Path,
        typer.Argument(metavar="CERT", help="PEM certificate, optionally followed by its chain."),
    ],
    key_file: Annotated[Path, typer.Argument(metavar="KEY", help="Its unencrypted private key.")],
) -> None:
    """Install a CA-signed certificate and its key (checked: key matches, not expired)."""
    c = context(ctx)
    for label, p in (("CERT", cert_file), ("KEY", key_file)):
        if not p.exists():
            fail(f"{label}: {p}: no such file", 2)
    config, _, _ = _tls_paths(c)
    tls_dir = tls_certs.tls_dir(c.state_dir(config))
    cert, _ = tls_certs.import_pair(cert_file, key_file, tls_dir)
    _print_cert(tls_certs.describe(cert))
    _reload_hint()


# --- extensions ---------------------------------------------------------------------

# The archive and maintenance command groups live in their own modules.
from admin import cli_archive, cli_maintenance  # noqa: E402

cli_archive.register(app)
cli_maintenance.register(app)
