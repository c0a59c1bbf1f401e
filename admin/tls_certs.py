"""The proxy's own certificate: make, describe, request and import it (`proxy-admin tls`).

The client-facing certificate and key live in `state_dir/tls/cert.pem` and `key.pem`
(DESIGN, Listeners). This module is a small library over `cryptography`; the CLI calls
one function per command and turns `CertError` into a one-line error. Keys are written
with mode 0600 through a temp file + rename, so a crash never leaves a half-written key
and a running service never reads a cert that does not match its key for long.

RSA 2048 rather than ECDSA: the clients of a mail gateway include old Outlook builds,
scanners and printers, and RSA is the one key type they all speak.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from admin.errors import AdminError
from archive.durable import write_atomic
from archive.timefmt import utc_iso

TLS_DIR_NAME = "tls"
CERT_FILE_NAME = "cert.pem"
KEY_FILE_NAME = "key.pem"
RSA_KEY_BITS = 2048
#: Self-signed certificates are pinned by clients ("add exception"); renewing one means
#: every client has to accept it again, so make it last.
SELF_SIGNED_DAYS = 3650
#: Tolerate client clocks that run a little behind.
BACKDATE = dt.timedelta(hours=1)


class CertError(AdminError):
    """A certificate or key problem, described in one line (never containing key bytes)."""


def tls_dir(state_dir: Path) -> Path:
    return state_dir / TLS_DIR_NAME


def server_context_paths(state_dir: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) of the proxy's client-facing certificate."""
    d = tls_dir(state_dir)
    return d / CERT_FILE_NAME, d / KEY_FILE_NAME


# --- files --------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise CertError(f"{path}: is a directory, not a {what} file") from None
    except OSError as e:
        raise CertError(f"{path}: cannot read: {e.strerror}") from None


def _load_certs(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise CertError(f"{path}: not a PEM or DER certificate") from None
    return certs


def _load_key(path: Path) -> Any:
    data = _read(path, "key")
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise CertError(f"{path}: key is encrypted; decrypt it first (openssl pkey)") from None
    except ValueError:
        raise CertError(f"{path}: not a PEM or DER private key") from None
    except UnsupportedAlgorithm:
        raise CertError(f"{path}: unsupported private key type") from None


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- names --------------------------------------------------------------------------


def _general_names(hostname: str, extra: tuple[str, ...] = ()) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for name in (hostname, *extra):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            entry = x509.DNSName(name)
        if entry not in names:
            names.append(entry)
    return names


def check_hostname(hostname: str) -> str:
    """Return `hostname` if it can name a certificate, else raise CertError."""
    h = hostname.strip()
    if not h:
        raise CertError("hostname is empty")
    try:
        ipaddress.ip_address(h)
        return h
    except ValueError:
        pass
    labels = h.rstrip(".").split(".")
    for i, label in enumerate(labels):
        ok = label == "*" and i == 0 and len(labels) > 2
        ok = ok or (
            0 < len(label) <= 63
            and all(c.isalnum() or c in "-_" for c in label)
            and label.isascii()
            and not label.startswith("-")
            and not label.endswith("-")
        )
        if not ok:
            raise CertError(f"{hostname!r} is not a valid host name")
    if len(h) > 253:
        raise CertError(f"{hostname!r} is too long for a host name")
    return h.rstrip(".")


def _subject(hostname: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailtee"),
        ]
    )


# --- the library API ----------------------------------------------------------------


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=not ca,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, now: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:  # fmt: skip
    """What every certificate mailtee makes starts with: names, key, a random serial, and
    validity from BACKDATE before `now` (clients whose clock runs behind) to `not_after`."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
    )


def _server_extensions(
    builder: x509.CertificateBuilder,
    hostname: str,
    extra_names: tuple[str, ...],
    key: rsa.RSAPrivateKey,
) -> x509.CertificateBuilder:
    """The extensions of a server (leaf) certificate, self-signed or CA-issued: its names,
    not a CA, TLS server use only."""
    return (
        builder.add_extension(
            x509.SubjectAlternativeName(_general_names(hostname, extra_names)), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_self_signed(
    hostname: str,
    cert_path: Path,
    key_path: Path,
    *,
    extra_names: tuple[str, ...] = (),
    days: int = SELF_SIGNED_DAYS,
) -> None:
    """Write a new RSA key (0600) and a self-signed server certificate for `hostname`.

    `extra_names` become further subjectAltNames (DNS names or IP addresses).
    """
    hostname = check_hostname(hostname)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    now = dt.datetime.now(dt.UTC)
    name = _subject(hostname)
    builder = _builder(name, name, key, now, now + dt.timedelta(days=days))
    cert = _server_extensions(builder, hostname, extra_names, key).sign(key, hashes.SHA256())
    # Key first: a cert.pem whose key is missing is worse than a stale pair.
    write_atomic(Path(key_path), _key_pem(key), 0o600)
    write_atomic(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), 0o640)


def make_csr(key_path: Path, hostname: str) -> bytes:
    """A PEM certificate signing request for `hostname`, signed with the existing key."""
    hostname = check_hostname(hostname)
    key = _load_key(Path(key_path))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(hostname))
        .add_extension(x509.SubjectAlternativeName(_general_names(hostname)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def describe(cert_path: Path) -> dict[str, Any]:
    """The facts an operator checks about a certificate file (the first cert of a chain)."""
    certs = _load_certs(Path(cert_path))
    cert = certs[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        sans = []
    now = dt.datetime.now(dt.UTC)
    return {
        "path": str(cert_path),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": sans,
        "serial": format(cert.serial_number, "x"),
        "not_before": utc_iso(cert.not_valid_before_utc),
        "not_after": utc_iso(cert.not_valid_after_utc),
        "expired": cert.not_valid_after_utc < now,
        "self_signed": cert.subject == cert.issuer,
        "chain_length": len(certs),
        "sha256": _fingerprint(cert),
    }


def _same_public_key(cert: x509.Certificate, key: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, fmt) == key.public_key().public_bytes(enc, fmt)


def import_pair(cert: Path, key: Path, tls_dir: Path) -> tuple[Path, Path]:
    """Check and install a certificate (chain) and its key as tls_dir/cert.pem, key.pem.

    Refuses a key that does not belong to the certificate, an expired certificate and
    one that is not yet valid. Returns the installed (cert, key) paths.
    """
    certs = _load_certs(Path(cert))
    private_key = _load_key(Path(key))
    leaf = certs[0]
    if not _same_public_key(leaf, private_key):
        raise CertError(f"{key}: this key does not belong to the certificate in {cert}")
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc < now:
        raise CertError(f"{cert}: certificate expired on {utc_iso(leaf.not_valid_after_utc)}")
    if leaf.not_valid_before_utc > now + BACKDATE:
        start = utc_iso(leaf.not_valid_before_utc)
        raise CertError(f"{cert}: certificate is not valid before {start}")
    tls_dir = Path(tls_dir)
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    cert_dst, key_dst = tls_dir / CERT_FILE_NAME, tls_dir / KEY_FILE_NAME
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    write_atomic(key_dst, _key_pem(private_key), 0o600)
    write_atomic(cert_dst, chain, 0o640)
    return cert_dst, key_dst


def key_matches(cert_path: Path, key_path: Path) -> bool:
    """True when key.pem is the private key of cert.pem's public key."""
    return _same_public_key(_load_certs(Path(cert_path))[0], _load_key(Path(key_path)))
