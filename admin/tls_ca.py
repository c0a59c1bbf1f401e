"""The appliance CA: a small private CA that signs the proxy's own server certificate.

Why (issue 10 item 14): Thunderbird (NSS) refuses a self-signed server certificate
outright (`SSLV3_ALERT_BAD_CERTIFICATE`, shown as "connection refused"), and trusting
that leaf in NSS does not help -- NSS wants a CA it trusts. So `init` creates a CA once,
keeps its key beside the server key (`state_dir/tls/ca-key.pem`, 0600, in the 0700 tls
dir), and signs the server certificate with it. Clients (or a GPO / MDM profile) import
the CA certificate once (`proxy-admin tls ca`); renewing the server certificate later
needs no client change.

Leaf rules the clients check: subjectAltName with the gateway's name and its listen
addresses, serverAuth, not a CA, at most 825 days (Apple's limit for private CAs). The CA
is constrained to sign leaves only (pathlen 0).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from admin.tls_certs import (
    RSA_KEY_BITS,
    CertError,
    _builder,
    _key_pem,
    _key_usage,
    _load_certs,
    _load_key,
    _server_extensions,
    _subject,
    check_hostname,
    tls_dir,
)
from archive.durable import write_atomic

CA_CERT_FILE_NAME = "ca.pem"
CA_KEY_FILE_NAME = "ca-key.pem"
CA_DAYS = 3650 * 2
#: Apple platforms reject private-CA leaves valid for longer (others accept it too).
LEAF_DAYS = 825


def ca_paths(state_dir: Path) -> tuple[Path, Path]:
    """(ca.pem, ca-key.pem) of the appliance CA."""
    d = tls_dir(state_dir)
    return d / CA_CERT_FILE_NAME, d / CA_KEY_FILE_NAME


def make_ca(hostname: str, ca_cert: Path, ca_key: Path) -> None:
    """Write a new CA key (0600) and self-signed CA certificate named after `hostname`."""
    hostname = check_hostname(hostname)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"mailtee CA {hostname}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailtee"),
        ]
    )
    cert = (
        _builder(name, name, key, now, now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(Path(ca_key), _key_pem(key), 0o600)
    write_atomic(Path(ca_cert), cert.public_bytes(serialization.Encoding.PEM), 0o640)


def ensure_ca(hostname: str, ca_cert: Path, ca_key: Path) -> bool:
    """Create the CA unless a usable one exists; True when it was created."""
    if ca_cert.exists() and ca_key.exists():
        load_ca(ca_cert, ca_key)  # a broken pair is an error, not silently replaced
        return False
    make_ca(hostname, ca_cert, ca_key)
    return True


def load_ca(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, Any]:
    cert = _load_certs(ca_cert)[0]
    key = _load_key(ca_key)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertError(f"{ca_cert}: not a CA certificate")
    fmt, enc = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, fmt) != key.public_key().public_bytes(enc, fmt):
        raise CertError(f"{ca_key}: this key does not belong to the CA certificate {ca_cert}")
    return cert, key


def server_names(
    hostname: str, listen: Iterable[str], extra: Iterable[str] = ()
) -> tuple[str, ...]:
    """The subjectAltNames of the server certificate besides `hostname`: the specific
    listen addresses (0.0.0.0 / :: name no address a client could use), then `extra`."""
    names: list[str] = []
    for addr in [*listen, *extra]:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            ip = None
        if ip is not None and ip.is_unspecified:
            continue
        if addr != hostname and addr not in names:
            names.append(addr)
    return tuple(names)


def issue_server_cert(
    hostname: str,
    cert_path: Path,
    key_path: Path,
    ca_cert: Path,
    ca_key: Path,
    *,
    extra_names: tuple[str, ...] = (),
    days: int = LEAF_DAYS,
) -> None:
    """Write a new server key (0600) and a certificate for it signed by the CA.

    cert.pem holds the leaf followed by the CA, so a client that has the CA finds the
    chain, and `tls show` sees the issuer."""
    hostname = check_hostname(hostname)
    ca, ca_private = load_ca(ca_cert, ca_key)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    builder = _builder(_subject(hostname), ca.subject, key, now, not_after)
    cert = (
        _server_extensions(builder, hostname, extra_names, key)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_private.public_key()),
            critical=False,
        )
        .sign(ca_private, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_atomic(Path(key_path), _key_pem(key), 0o600)
    write_atomic(Path(cert_path), cert.public_bytes(pem) + ca.public_bytes(pem), 0o640)


def issued_by(cert_path: Path, ca_cert: Path) -> bool:
    """Was cert.pem's leaf signed by this CA?"""
    leaf = _load_certs(cert_path)[0]
    ca = _load_certs(ca_cert)[0]
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):  # wrong signer, or another key type
        return False
    return True


def ca_bytes(ca_cert: Path, *, der: bool = False) -> bytes:
    cert = _load_certs(ca_cert)[0]
    enc = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return cert.public_bytes(enc)
