"""The appliance CA: `init` makes it and signs the server certificate, `tls ca` prints it,
`tls self-signed` re-issues from it (issue 10 item 14). Thunderbird's view of it is
tests/e2e/test_thunderbird_ca.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import trustme
from admin_cli_helpers import Cli, assert_one_line_error
from cryptography import x509


def _leaf_and_ca(state: Path) -> tuple[x509.Certificate, x509.Certificate]:
    chain = x509.load_pem_x509_certificates((state / "tls" / "cert.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((state / "tls" / "ca.pem").read_bytes())
    return chain[0], ca


def test_init_signs_the_server_certificate_with_the_appliance_ca(initialised: Cli) -> None:
    state = initialised.config_path.parent / "state"
    leaf, ca = _leaf_and_ca(state)
    leaf.verify_directly_issued_by(ca)  # raises if not
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gw.example.org"]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 826
    assert stat.S_IMODE((state / "tls" / "ca-key.pem").stat().st_mode) == 0o600

    pem = initialised("tls", "ca")
    assert pem.exit_code == 0, pem.output
    assert x509.load_pem_x509_certificate(pem.stdout.encode()) == ca
    info = json.loads(initialised("tls", "ca", "--json").stdout)
    assert info["signs_current_certificate"] is True and info["sha256"]
    out = initialised.config_path.parent / "ca.cer"
    assert initialised("tls", "ca", "--der", "--out", str(out)).exit_code == 0
    assert x509.load_der_x509_certificate(out.read_bytes()) == ca
    assert_one_line_error(initialised("tls", "ca", "--der"), 2, "--out")


def test_self_signed_reissues_from_the_same_ca_with_the_listen_addresses(
    initialised: Cli,
) -> None:
    state = initialised.config_path.parent / "state"
    old_leaf, ca = _leaf_and_ca(state)
    r = initialised("listener", "add", "pop3s", "--protocol", "pop3", "--client-tls",
                    "implicit", "--listen", "192.0.2.7", "--target", "pop.example.net")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert initialised("tls", "self-signed").exit_code == 0
    leaf, same_ca = _leaf_and_ca(state)
    assert same_ca == ca and leaf != old_leaf
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]


def test_tls_ca_warns_after_an_imported_certificate(initialised: Cli, tmp_path: Path) -> None:
    other = trustme.CA().issue_cert("gw.example.org")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    other.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    assert initialised("tls", "import", str(cert), str(key)).exit_code == 0
    r = initialised("tls", "ca")
    assert r.exit_code == 0
    assert "not signed by this CA" in r.stderr
