"""admin.tls_certs (library) and `proxy-admin tls` (CLI): certificates load with cryptography."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import stat
from pathlib import Path

import pytest
import trustme
from admin_cli_helpers import Cli, assert_one_line_error
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from admin import tls_certs
from admin.tls_certs import (
    CertError,
    describe,
    import_pair,
    make_csr,
    make_self_signed,
    server_context_paths,
)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in ext]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = server_context_paths(tmp_path)
    make_self_signed("gw.example.org", cert, key, extra_names=("127.0.0.1",))
    return cert, key


def test_self_signed_is_a_usable_server_certificate(pair: tuple[Path, Path]) -> None:
    cert_path, key_path = pair
    cert = load_cert(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw.example.org"
    assert cert.subject == cert.issuer
    assert sans(cert) == ["gw.example.org", "127.0.0.1"]
    cert.verify_directly_issued_by(cert)
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    assert mode(key_path) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert key.public_key() == cert.public_key()
    # The standard library accepts the pair as a server certificate.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)


def test_csr_uses_the_existing_key(pair: tuple[Path, Path]) -> None:
    cert_path, key_path = pair
    csr = x509.load_pem_x509_csr(make_csr(key_path, "mail.example.org"))
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.example.org"
    assert csr.public_key() == load_cert(cert_path).public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.org"]


def test_describe(pair: tuple[Path, Path]) -> None:
    info = describe(pair[0])
    cert = load_cert(pair[0])
    assert info["sans"] == ["gw.example.org", "127.0.0.1"]
    assert info["self_signed"] and not info["expired"]
    assert info["sha256"] == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert info["not_after"].endswith("Z") and "CN=gw.example.org" in info["subject"]


def ca_signed(tmp_path: Path, ca: trustme.CA, name: str = "mail.example.org") -> tuple[Path, Path]:
    leaf = ca.issue_cert(name)
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def test_import_pair_installs_chain_and_key(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = ca_signed(tmp_path, ca)
    dst = tmp_path / "state" / "tls"
    cert_dst, key_dst = import_pair(cert, key, dst)
    assert (cert_dst, key_dst) == (dst / "cert.pem", dst / "key.pem")
    assert mode(key_dst) == 0o600 and mode(dst) == 0o700
    assert sans(load_cert(cert_dst)) == ["mail.example.org"]
    assert describe(cert_dst)["chain_length"] == len(
        x509.load_pem_x509_certificates(cert.read_bytes())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_dst, key_dst)


def test_import_refuses_a_key_of_another_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, _ = ca_signed(tmp_path, ca)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = ca_signed(other, ca)
    with pytest.raises(CertError, match="does not belong"):
        import_pair(cert, other_key, tmp_path / "tls")
    assert not (tmp_path / "tls" / "cert.pem").exists()


def expired_pair(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.org")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    c, k = tmp_path / "old.pem", tmp_path / "old.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def test_import_refuses_expired(tmp_path: Path) -> None:
    cert, key = expired_pair(tmp_path)
    with pytest.raises(CertError, match="expired"):
        import_pair(cert, key, tmp_path / "tls")


def test_import_refuses_encrypted_key_and_garbage(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertError, match="encrypted"):
        import_pair(cert, encrypted, tmp_path / "x")
    garbage = tmp_path / "garbage"
    garbage.write_text("hello")
    with pytest.raises(CertError, match="not a PEM or DER certificate"):
        import_pair(garbage, key, tmp_path / "x")
    with pytest.raises(CertError, match="not a PEM or DER private key"):
        import_pair(cert, garbage, tmp_path / "x")


@pytest.mark.parametrize("bad", ["", "bad host", "-x.example", "a..b", "x" * 64 + ".org"])
def test_bad_hostnames(bad: str, tmp_path: Path) -> None:
    with pytest.raises(CertError):
        make_self_signed(bad, tmp_path / "c", tmp_path / "k")


def test_hostname_forms() -> None:
    assert tls_certs.check_hostname("mail.example.org.") == "mail.example.org"
    assert tls_certs.check_hostname("::1") == "::1"
    assert tls_certs.check_hostname("*.example.org") == "*.example.org"


# --- CLI ------------------------------------------------------------------------------


def tls_dir(cli: Cli) -> Path:
    return cli.config_path.parent / "state" / "tls"


def test_cli_show(initialised: Cli) -> None:
    r = initialised("tls", "show", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["sans"] == ["gw.example.org"] and info["key_matches"] is True
    assert list(info) == sorted(info)
    human = initialised("tls", "show")
    assert info["sha256"] in human.stdout and "not after" in human.stdout


def test_cli_show_without_certificate(initialised: Cli) -> None:
    (tls_dir(initialised) / "cert.pem").unlink()
    assert_one_line_error(initialised("tls", "show"), 1, "tls self-signed")


def test_cli_self_signed(initialised: Cli) -> None:
    old = (tls_dir(initialised) / "cert.pem").read_bytes()
    r = initialised("tls", "self-signed", "--hostname", "new.example.org")
    assert r.exit_code == 0, r.output
    cert = load_cert(tls_dir(initialised) / "cert.pem")
    assert sans(cert) == ["new.example.org"]
    assert (tls_dir(initialised) / "cert.pem").read_bytes() != old
    assert mode(tls_dir(initialised) / "key.pem") == 0o600
    # default: the hostname from config.toml
    assert initialised("tls", "self-signed").exit_code == 0
    assert sans(load_cert(tls_dir(initialised) / "cert.pem")) == ["gw.example.org"]
    assert_one_line_error(initialised("tls", "self-signed", "--hostname", "a b"), 2, "--hostname")


def test_cli_csr(initialised: Cli, tmp_path: Path) -> None:
    out = tmp_path / "req.csr"
    r = initialised("tls", "csr", "--hostname", "mail.example.org", "--out", str(out))
    assert r.exit_code == 0, r.output
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.public_key() == load_cert(tls_dir(initialised) / "cert.pem").public_key()
    r = initialised("tls", "csr", "--out", "-")
    assert r.exit_code == 0
    assert x509.load_pem_x509_csr(r.stdout.encode()).is_signature_valid
    assert_one_line_error(initialised("tls", "csr"), 2, "--out")


def test_cli_import(initialised: Cli, tmp_path: Path) -> None:
    cert, key = ca_signed(tmp_path, trustme.CA())
    r = initialised("tls", "import", str(cert), str(key))
    assert r.exit_code == 0, r.output
    assert sans(load_cert(tls_dir(initialised) / "cert.pem")) == ["mail.example.org"]
    assert mode(tls_dir(initialised) / "key.pem") == 0o600
    shown = json.loads(initialised("tls", "show", "--json").stdout)
    assert shown["key_matches"] and not shown["self_signed"]


def test_cli_import_errors(initialised: Cli, tmp_path: Path) -> None:
    before = (tls_dir(initialised) / "cert.pem").read_bytes()
    assert_one_line_error(initialised("tls", "import", "/nope.pem", "/nope.key"), 2, "CERT")
    cert, key = expired_pair(tmp_path)
    assert_one_line_error(initialised("tls", "import", str(cert), str(key)), 1, "expired")
    good, _ = ca_signed(tmp_path, trustme.CA())
    line = assert_one_line_error(
        initialised("tls", "import", str(good), str(key)), 1, "does not belong"
    )
    assert "PRIVATE KEY" not in line
    assert (tls_dir(initialised) / "cert.pem").read_bytes() == before
