"""Client-side TLS offers no CBC suites (issue 10 item 9; testssl flagged LUCKY13).

Every TLS 1.2 suite this OpenSSL knows is offered to an implicit-TLS listener with
`openssl s_client -cipher NAME`, one at a time: only AEAD suites (AES-GCM, ChaCha20-
Poly1305) may complete a handshake, and at least one must. TLS 1.3 has only AEAD suites.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import trio

pytestmark = pytest.mark.e2e

OPENSSL = shutil.which("openssl")
AEAD = ("GCM", "CHACHA20", "CCM")


def tls12_suites() -> list[str]:
    out = subprocess.run(
        [OPENSSL, "ciphers", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Suites no certificate of ours could use anyway (PSK, SRP, anonymous, DSS) are skipped.
    unusable = ("TLS_", "PSK", "SRP", "ADH", "AECDH", "DSS", "NULL")
    return [name for name in out.strip().split(":") if not any(u in name for u in unusable)]


def handshake(port: int, cipher: str) -> bool:
    proc = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-cipher",
         f"{cipher}:@SECLEVEL=0", "-brief"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )  # fmt: skip
    return proc.returncode == 0


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_client_side_tls12_accepts_only_aead_suites(smtp_upstream, make_proxy) -> None:
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtps", "client_tls": "implicit", "target_port": up.port}])
    port = proxy.port("smtps")
    suites = tls12_suites()
    assert any("CBC" in s or s.endswith("SHA") or "SHA256" in s for s in suites)
    accepted = [s for s in suites if await trio.to_thread.run_sync(handshake, port, s)]
    assert accepted, "no TLS 1.2 suite at all"
    assert [s for s in accepted if not any(a in s for a in AEAD)] == []
