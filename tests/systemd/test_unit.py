"""systemd/mailtee.service: the hardening the appliance promises, and `systemd-analyze verify`.

verify needs the ExecStart binary to exist, so it checks a temporary copy whose ExecStart
points at this checkout's `proxy-admin` (the real unit names /usr/bin/proxy-admin, where
the .deb installs it). The verify tests skip, saying so, only when systemd-analyze is not
installed (apt package `systemd`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "mailtee.service"
INSTALLED_BINARY = "/usr/bin/proxy-admin"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd allows repeated keys, so a list per key)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return directives(UNIT.read_text())


def proxy_admin_here() -> str:
    found = Path(sys.executable).parent / "proxy-admin"
    if found.is_file():
        return str(found)
    which = shutil.which("proxy-admin")
    if which is None:
        pytest.skip("no proxy-admin console script installed in this environment")
    return which


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mailtee.service"
    path.write_text(unit_text)
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60
    )


def test_service_settings(unit):
    svc = {k: v[-1] for k, v in unit["Service"].items()}
    assert svc["Type"] == "notify"
    assert svc["ExecStart"] == f"{INSTALLED_BINARY} --config /etc/mailtee/config.toml run"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["User"] == "mailtee" and svc["Group"] == "mailtee"
    assert svc["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert svc["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert svc["ProtectSystem"] == "strict"
    assert "/var/lib/mailtee" in svc["ReadWritePaths"].split()
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["PrivateTmp"] == "yes"
    assert svc["Restart"] == "on-failure"
    assert int(svc["WatchdogSec"]) > 0
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) == 1
    res = verify(text.replace(INSTALLED_BINARY, proxy_admin_here()), tmp_path)
    complaints = [line for line in res.stderr.splitlines() if "mailtee.service" in line]
    assert res.returncode == 0 and complaints == [], res.stderr


@needs_analyze
def test_verify_is_meaningful(tmp_path):
    """The check above would fail for a broken unit (so it is not vacuous)."""
    text = UNIT.read_text()
    res = verify(text.replace(INSTALLED_BINARY, str(tmp_path / "missing")), tmp_path)
    assert res.returncode != 0 and "missing" in res.stderr
    broken = text.replace(INSTALLED_BINARY, proxy_admin_here()).replace(
        "ProtectSystem=strict", "ProtectSystem=stricter"
    )
    res = verify(broken, tmp_path)
    complaints = [line for line in res.stderr.splitlines() if "mailtee.service" in line]
    assert any("stricter" in line for line in complaints), res.stderr
