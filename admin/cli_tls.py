"""`proxy-admin tls ...`: the proxy's own certificate (state_dir/tls/cert.pem, key.pem)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from admin.cli_common import (
    CliContext,
    JsonOpt,
    admin_command,
    audit,
    context,
    fail,
    print_fields,
    print_json,
    reload_hint,
    warn,
)

if TYPE_CHECKING:
    from admin.config import Config

tls_app = typer.Typer(
    help="The proxy's own TLS certificate (state_dir/tls/cert.pem and key.pem).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(tls_app, name="tls")


# --- tls ----------------------------------------------------------------------------


def _tls_paths(c: CliContext) -> tuple[Config, Path, Path]:
    from admin import tls_certs

    config = c.load_config()
    cert, key = tls_certs.server_context_paths(c.state_dir(config))
    return config, cert, key


def _hostname_or_fail(hostname: str) -> str:
    from admin import tls_certs

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
    from admin import tls_certs

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
    """Replace the certificate and key with a new pair signed by the appliance CA
    (state_dir/tls/ca.pem, created if missing; clients that trust it need no change).

    Names: the hostname and every listener's specific listen address."""
    from admin import tls_ca, tls_certs

    c = context(ctx)
    config, cert, key = _tls_paths(c)
    host = _hostname_or_fail(hostname or config.hostname)
    cert.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert.parent, 0o700)
    ca_cert, ca_key = tls_ca.ca_paths(c.state_dir(config))
    created = tls_ca.ensure_ca(host, ca_cert, ca_key)
    names = tls_ca.server_names(host, [lst.listen for lst in config.listener])
    tls_ca.issue_server_cert(host, cert, key, ca_cert, ca_key, extra_names=names)
    _print_cert(tls_certs.describe(cert))
    if created:
        typer.echo(f"created the appliance CA {ca_cert}: install it in the mail clients (`tls ca`)")
    audit(c, "tls.self-signed", {"hostname": host, "names": list(names)})
    reload_hint()


@tls_app.command("ca")
def tls_ca_show(
    ctx: typer.Context,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="F",
            help="Write it to F instead of stdout (e.g. mailtee-ca.crt).",
        ),
    ] = None,
    der: Annotated[
        bool, typer.Option("--der", help="DER instead of PEM (a .cer file for Windows GPO).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print the appliance CA certificate that mail clients import to trust this gateway
    (Thunderbird: Settings > Certificates > Authorities > Import; Windows: GPO)."""
    from admin import tls_ca, tls_certs

    c = context(ctx)
    config, cert, _ = _tls_paths(c)
    ca_cert, _ = tls_ca.ca_paths(c.state_dir(config))
    if not ca_cert.exists():
        fail(f"{ca_cert}: no appliance CA yet (create it with `proxy-admin tls self-signed`)", 1)
    signs_ours = cert.exists() and tls_ca.issued_by(cert, ca_cert)
    if json_out:
        info = tls_certs.describe(ca_cert)
        info["signs_current_certificate"] = signs_ours
        info["pem"] = tls_ca.ca_bytes(ca_cert).decode()
        print_json(info)
        return
    data = tls_ca.ca_bytes(ca_cert, der=der)
    if out is None or out == "-":
        if der:
            fail("--der: binary output needs --out FILE", 2)
        sys.stdout.write(data.decode())
        sys.stdout.flush()
    else:
        Path(out).write_bytes(data)
        info = tls_certs.describe(ca_cert)
        typer.echo(f"wrote the CA certificate to {out} (sha256 {info['sha256']})")
    if not signs_ours:
        warn(
            f"{cert} is not signed by this CA (an imported certificate?): clients need "
            "the CA of that certificate instead"
        )


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
    from admin import tls_certs

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
    typer.echo(f"When the CA has signed it: {admin_command(c)}tls import SIGNED.pem {key}")


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
    from admin import tls_certs

    c = context(ctx)
    for label, p in (("CERT", cert_file), ("KEY", key_file)):
        if not p.exists():
            fail(f"{label}: {p}: no such file", 2)
    config, _, _ = _tls_paths(c)
    tls_dir = tls_certs.tls_dir(c.state_dir(config))
    cert, _ = tls_certs.import_pair(cert_file, key_file, tls_dir)
    info = tls_certs.describe(cert)
    _print_cert(info)
    audit(c, "tls.import", {"cert": str(cert_file), "sha256": info.get("sha256")})
    reload_hint()
