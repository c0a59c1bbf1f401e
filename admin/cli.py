"""`proxy-admin`: the operator's command line (DESIGN, proxy-admin).

Thin commands over library code: admin.config (model, TOML), admin.tls_certs
(certificates), proxy.service (the service). Errors the operator can cause are one stderr
line (`proxy-admin: error: ...`), exit 2 for a usage/config error and 1 for an
operational failure; see admin.cli_common.ProxyAdminGroup for where that happens.
The command groups (listener, tls, archive, maintenance) live in admin/cli_*.py and
are registered at the bottom.

Start-up cost — the lazy-import rule (issue 12 item 4). Every invocation, even
`--help`, imports this module and every admin/cli_*.py to build the typer app (all but
the plain `search`, which the console script admin/cli_fast.py answers without typer), so at
module level those files import only the standard library, typer and admin.cli_common /
admin.paths. Everything else is imported inside the command function that uses it:

    @group_app.command("add")
    def thing_add(ctx: typer.Context, name: NameArg) -> None:
        ...  # docstring = help text
        from admin.config import ThingConfig      # pydantic: only when the command runs
        from archive.things import add_thing      # archive, ssl, ldap3, cryptography, ...
        ...

- type hints of heavy classes: `if TYPE_CHECKING:` imports (annotations are strings);
- expected errors: `register_error("archive.things:ThingError", 1)` by name, which
  never imports the module;
- option defaults: literals or constants defined in the cli module, not attributes
  of a heavy class.
tests/admin/test_cli_imports.py enforces this: importing admin.cli and running
`--help` of every command load no archive, proxy, pydantic, cryptography, OpenSSL,
ldap3, tantivy, trio or rich module. The help is plain click text
(`rich_markup_mode=None`): rendering it with rich would import ~50 ms of modules.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from admin import filemodes
from admin.cli_common import (
    CliContext,
    JsonOpt,
    ProxyAdminGroup,
    admin_command,
    context,
    error_line,
    fail,
    hostport,
    print_fields,
    print_json,
    print_table,
    setup_logging,
)
from admin.cli_lazy import LazyTyper
from admin.paths import resolve_config_path, secrets_path

if TYPE_CHECKING:
    from admin.config import Config

app = LazyTyper(  # builds only the command it runs (admin/cli_lazy.py)
    cls=ProxyAdminGroup,
    name="proxy-admin",
    help="Administer mailtee, the transparent POP3/SMTP archiving proxy.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: rendering it with rich costs ~50 ms to import
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold passwords (invariant 5)
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: `init --demo` listeners: the proxy's ports in front of the demo provider's.
DEMO_SMTP_PORT = 2525
DEMO_POP3_PORT = 2110
#: `init --demo` web access (loopback only) and the demo login it creates: an archive
#: user who owns the demo mail sent to alice@example.com, role admin so that every page
#: can be tried. A fixed, printed password is fine for a loopback-only demo; a real
#: installation creates its users with `user add` + `user passwd`.
DEMO_WEB_PORT = 8443
DEMO_LOGIN = ("alice", "mailtee-demo")
#: How long `status` waits for a port to accept a connection.
PROBE_TIMEOUT = 0.5


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
    from admin import cli_exit

    filemodes.restrict_umask()  # state_dir files 0640, dirs 0750 whatever the umask
    cli_exit.reset()
    try:
        app(prog_name="proxy-admin")
    except SystemExit as e:
        cli_exit.exit_now(e.code)  # search/show: no interpreter teardown (admin/cli_exit.py)
        raise


# --- init ---------------------------------------------------------------------------


def _default_hostname(demo: bool) -> str:
    import socket

    from admin.config import Config

    if demo:
        return "localhost"
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    return Config().hostname


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
    """Create config.toml, secrets.toml, the state directory, the appliance CA and a
    server certificate signed by it."""
    from admin import tls_ca, tls_certs
    from admin.config import Config, ListenerConfig, Secrets

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

    if demo:
        config.web.enabled = True
        config.web.listen = "127.0.0.1"
        config.web.port = DEMO_WEB_PORT
        config.web.workers = 1

    sd = c.state_dir(config)
    for sub in ("", "reports", "archive", tls_certs.TLS_DIR_NAME):
        (sd / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(tls_certs.tls_dir(sd), 0o700)

    cert, key = tls_certs.server_context_paths(sd)
    ca_cert, ca_key = tls_ca.ca_paths(sd)
    ca_note = "created" if tls_ca.ensure_ca(host, ca_cert, ca_key) else "kept the existing one"
    if cert.exists() and key.exists():
        cert_note = "kept the existing one"
    else:
        names = tls_ca.server_names(
            host,
            [lst.listen for lst in config.listener],
            ("localhost", "127.0.0.1", "::1") if demo else (),
        )
        tls_ca.issue_server_cert(host, cert, key, ca_cert, ca_key, extra_names=names)
        cert_note = f"for {', '.join((host, *names))}, signed by the appliance CA"

    spath = secrets_path(c.config_path)
    if force or not spath.exists():
        c.save_secrets(Secrets())
        secrets_note = "empty, mode 0600"
    else:
        os.chmod(spath, 0o600)
        secrets_note = "kept the existing one, mode 0600"
    if demo:
        _create_demo_login(sd)
    filemodes.tighten(sd)  # 0640/0750 even when init runs in-process under umask 022
    c.save_config(config)  # last: a failed init leaves no config behind and can be re-run
    if c.config_path.resolve().is_relative_to(sd.resolve()):
        os.chmod(c.config_path, 0o640)  # inside the state dir (make run): 0640 like the rest

    fingerprint = tls_certs.describe(cert)["sha256"]
    typer.echo(f"Created {c.config_path}")
    print_fields(
        [
            ("  secrets", f"{spath} ({secrets_note})"),
            ("  state dir", f"{sd} (reports/, archive/, tls/)"),
            ("  certificate", f"{cert} ({cert_note})"),
            ("  sha256", fingerprint),
            ("  CA", f"{ca_cert} ({ca_note}; mail clients trust this one: `tls ca`)"),
            ("  CA sha256", tls_certs.describe(ca_cert)["sha256"]),
        ]
    )
    _print_next_steps(c, config, demo)


def _create_demo_login(state_dir: Path) -> None:
    """The demo's web login (DEMO_LOGIN): kept if it exists (init --force keeps the archive)."""
    from archive.logins import set_password, set_role
    from archive.store import Archive
    from archive.users import UserSpec, add_user

    name, password = DEMO_LOGIN
    archive = Archive(state_dir)
    try:
        if archive.catalog.one("SELECT 1 FROM users WHERE name = ?", (name,)) is None:
            add_user(archive.catalog, UserSpec(name, ["alice@example.com"], "Alice (demo)",
                                               ["alice@example.com"]))  # fmt: skip
        set_password(archive.catalog, name, password)
        set_role(archive.catalog, name, "admin")
    finally:
        archive.close()


def web_url(config: Config) -> str:
    """Where the web side answers (the listen address, or the hostname for a wildcard)."""
    host = config.web.listen
    if host in ("0.0.0.0", "::", ""):
        host = config.hostname
    return f"https://{hostport(host, config.web.port)}/"


def _web_lines(config: Config) -> list[str]:
    """What `init --demo` and `run` print about web access (nothing when it is off)."""
    if not config.web.enabled:
        return []
    lines = [f"Web access: {web_url(config)}"]
    if config.demo.enabled:
        name, password = DEMO_LOGIN
        lines.append(
            f"  demo login: {name} / {password}  (the browser warns about the appliance CA: "
            "accept it, or import `proxy-admin tls ca`)"
        )
    return lines


def _print_next_steps(c: CliContext, config: Config, demo: bool) -> None:
    """What to type next: shell lines that work as printed from the user's directory
    (admin_command; comments after `#`), the same set-up as README.md/docs/install.md."""
    pa = admin_command(c)
    typer.echo("")
    if demo:
        typer.echo(
            f"Demo provider: SMTP 127.0.0.1:{config.demo.smtp_port}, "
            f"POP3 127.0.0.1:{config.demo.pop3_port} (started by `run`)."
        )
        ports = {lst.protocol: lst.bind_port for lst in config.listener}
        for lst in config.listener:
            typer.echo(
                f"Listener {lst.name}: 127.0.0.1:{lst.bind_port} -> "
                f"{hostport(lst.target_host, lst.upstream_port)}"
            )
        for line in _web_lines(config):
            typer.echo(line)
        typer.echo("\nNext:")
        typer.echo(f"  {pa}run   # `make run` starts it for you; Ctrl-C stops it")
        typer.echo("Then, in a second terminal:")
        typer.echo(
            f"  swaks --server 127.0.0.1:{ports.get('smtp', DEMO_SMTP_PORT)} "
            "--from you@example.com --to alice@example.com"
        )
        typer.echo(
            f"  curl -s --user alice@example.com:any "
            f"pop3://127.0.0.1:{ports.get('pop3', DEMO_POP3_PORT)}/1   # read it back, any password"
        )
        typer.echo(f"  {pa}status")
        typer.echo(f"  {pa}search test   # archived within seconds")
    else:
        typer.echo("Next (clients will use 587 STARTTLS and 995 SSL/TLS, as in README.md):")
        typer.echo(
            f"  {pa}listener add smtp --protocol smtp --port 587 --client-tls starttls "
            "--target smtp.provider.example:587 --target-tls starttls"
        )
        typer.echo(
            f"  {pa}listener add pop3 --protocol pop3 --client-tls implicit "
            "--target pop.provider.example --target-tls implicit"
        )
        typer.echo(f"  {pa}tls ca > mailtee-ca.crt   # the CA to install in the mail clients")
        typer.echo(f"  {pa}run   # or: systemctl enable --now mailtee")


# --- run ----------------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _preflight_tls(c: CliContext, config: Config) -> None:
    from admin import tls_certs

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
    import logging

    from admin.config import check_secrets

    c = context(ctx)
    config = c.load_config()
    secrets = c.load_secrets(strict_mode=True)
    check_secrets(config, secrets)
    _preflight_tls(c, config)
    import trio

    from proxy import service

    handler = setup_logging(config.log_level)
    old_umask = filemodes.restrict_umask()  # restored below (in-process callers, tests)
    loosened = filemodes.tighten(c.state_dir(config))
    if loosened:
        logging.getLogger("mailtee").warning(
            "tightened the modes of %d path(s) under the state dir (0640/0750)", len(loosened)
        )
    try:
        from functools import partial

        from proxy.workers import worker_count

        run_service = partial(service.run_service, workers=worker_count(config))
        for line in _web_lines(config):
            typer.echo(line, err=True)
        trio.run(run_service, config, secrets, c.config_path)
        # SIGINT (Ctrl-C) and SIGTERM are caught by the service, which stops cleanly
        typer.echo("proxy-admin: stopped", err=True)
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
        os.umask(old_umask)


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
    import socket

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


def _yes_no(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def service_status(state_dir: Path) -> dict[str, Any] | None:
    """The running service's own status over its control socket; None if it is not up."""
    from proxy import control

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
    for w in svc.get("workers") or []:
        state = "running" if w.get("alive") else "not running"
        sessions = ", ".join(f"{k} {v}" for k, v in sorted((w.get("sessions") or {}).items()))
        fields.append(
            (
                f"worker {w.get('worker')}",
                f"{state} (pid {w.get('pid')}, restarts {w.get('restarts', 0)}), "
                f"{w.get('active_sessions', 0)} session(s){': ' + sessions if sessions else ''}",
            )
        )
    if svc.get("report_retention_note"):
        fields.append(
            (
                "report folder",
                f"{svc.get('reports_in_folder', 0)} pair(s); {svc['report_retention_note']}",
            )
        )
    draining = svc.get("draining") or {}
    if draining:
        fields.append(("draining", ", ".join(f"{k} ({v})" for k, v in sorted(draining.items()))))
    reload = svc.get("last_reload")
    if reload:
        fields.append(
            ("last reload", f"{reload.get('at')}, {len(reload.get('errors', []))} error(s)")
        )
    for acc in svc.get("accounts", []):  # OAuth2 (never a token: state and counters)
        left = acc.get("token_expires_in")
        token = f"token valid {left} s more" if left is not None else "no token held"
        fields.append(
            (f"account {acc.get('name')}", f"{acc.get('state')}, {token}, "
             f"{acc.get('token_requests', 0)} token request(s)")
        )  # fmt: skip
    for err in svc.get("last_errors", [])[-5:]:
        fields.append(("error", f"{err.get('at')} {err.get('kind')}: {err.get('summary')}"))
    return fields


def _accepting(
    lst: Any, live: dict[str, Any] | None, svc: dict[str, Any] | None, listening: Any
) -> tuple[bool | None, str | None]:
    """Is `lst` accepting connections, and if not, why (when the service can tell)?

    Only the service's own word counts: a port that some other program holds is not
    mailtee accepting (issue 10 item 12) -- whether the service is up and failed to bind
    it on a reload, or is down (`run` exits when a port is taken at start).
    """
    if live:
        return True, None
    if svc is None:
        in_use = _probe(lst.listen, lst.port, listening)
        if in_use:
            return False, (
                f"{hostport(lst.listen, lst.bind_port)} is in use by another program "
                "(mailtee is not running)"
            )
        return (None if in_use is None else False), None
    error = (svc.get("bind_errors") or {}).get(lst.name)
    if error:
        return False, error
    if lst.name not in svc.get("configured", []):
        return False, "not in the running configuration (apply it: `proxy-admin reload`)"
    return False, "not listening"


def _mailbox_line(box: dict[str, Any]) -> str:
    when = f"every {box['interval']}" if box["interval"] else "pulled by `proxy-admin pull`"
    if box["last_run"] is None:
        return f"never pulled ({when})"
    if not box["failures_in_a_row"]:
        return f"ok, last pull {box['last_run']} ({when})"
    ok = f"; last good pull {box['last_ok']}" if box["last_ok"] else ""
    return (
        f"FAILED {box['failures_in_a_row']} time(s) in a row, last {box['last_run']}: "
        f"{box['last_error']}{ok} ({when})"
    )


@app.command()
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show listeners, sessions, the report backlog, recent errors and free disk space.

    While the service runs it answers through its control socket (state_dir/control.sock);
    otherwise the ports are checked from outside.
    """
    from archive.reports import backlog as report_backlog

    c = context(ctx)
    config = c.load_config()
    sd = c.state_dir(config)
    svc = service_status(sd)
    running = {x["name"]: x for x in (svc or {}).get("listeners", [])}
    listening = listening_sockets()
    listeners = []
    for lst in config.listener:
        live = running.get(lst.name)
        accepting, error = _accepting(lst, live, svc, listening)
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
                "accepting": accepting,
                "error": error,
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
    pending = svc["reports_pending"] if svc else report_backlog(sd)
    from archive.pull.state import mailbox_outcomes

    mailboxes = mailbox_outcomes(config.mailbox, sd)
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
                "mailboxes": mailboxes,
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
    for box in mailboxes:
        fields.append((f"mailbox {box['name']}", _mailbox_line(box)))
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
                hostport(lst["listen"], lst["port"]),
                hostport(lst["target_host"], lst["target_port"]),
                lst["client_tls"],
                lst["target_tls"],
                "-" if lst["active_sessions"] is None else lst["active_sessions"],
                _yes_no(lst["accepting"]),
            )
            for lst in listeners
        ],
    )
    for lst in listeners:
        if lst["error"]:
            typer.echo(f"listener {lst['name']}: {lst['error']}")


# --- reload -------------------------------------------------------------------------

#: How long `reload` waits for the service to re-read and apply the configuration.
RELOAD_TIMEOUT = 60.0


def _reload_lines(result: dict[str, Any]) -> list[str]:
    from proxy.reload_diff import summary

    details = result.get("details") or {}
    lines = [
        f"added:     {', '.join(result.get('added', [])) or '-'}",
        f"removed:   {', '.join(result.get('removed', [])) or '-'}",
        f"changed:   {summary(result.get('changed', []), details).replace(',', ', ') or '-'}",
        f"unchanged: {', '.join(result.get('unchanged', [])) or '-'}",
    ]
    if result.get("settings"):
        lines.append(f"settings:  {', '.join(result['settings'])}")
    return lines


@app.command()
def reload(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Make the running service re-read config.toml and secrets.toml (like SIGHUP or
    `systemctl reload mailtee`) and show what changed. Sessions in flight continue."""
    from proxy import control

    c = context(ctx)
    sock = control.socket_path(c.state_dir(c.load_config()))
    try:
        reply = control.request(sock, "reload", timeout=RELOAD_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        fail(
            f"the service is not running (no answer on {sock}); start it with "
            "`systemctl start mailtee` or `proxy-admin run`",
            1,
        )
    except (OSError, control.ControlError) as e:
        fail(f"reload: {e}", 1)
    if json_out:
        print_json(reply)
    elif "reload" in reply:
        typer.echo("reloaded " + str(c.config_path))
        for line in _reload_lines(reply["reload"]):
            typer.echo("  " + line)
        for err in reply["reload"].get("errors", []):
            typer.echo(error_line(err), err=True)
    if not reply.get("ok"):
        if "reload" not in reply:  # the config did not load: nothing changed
            fail(f"reload failed, the running configuration stays: {reply.get('error')}", 1)
        raise typer.Exit(1)


# --- extensions ---------------------------------------------------------------------

# Command groups live in their own modules.
from admin import (  # noqa: E402
    cli_account,
    cli_archive,
    cli_listener,
    cli_mailbox,
    cli_maintenance,
    cli_pull,
    cli_tls,
    cli_web,
)

cli_listener.register(app)
cli_tls.register(app)
cli_archive.register(app)
cli_maintenance.register(app)
cli_account.register(app)  # OAuth2 accounts (docs/oauth2.md)
cli_mailbox.register(app)  # mailboxes `pull` archives (docs/mailboxes.md)
app.command("pull")(cli_pull.pull)
cli_web.register(app)  # the web side (docs/web.md)
