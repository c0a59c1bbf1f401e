"""systemd/mailtee-pull.service + .timer: settings, and `systemd-analyze verify`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_unit import ANALYZE, INSTALLED_BINARY, directives, needs_analyze, proxy_admin_here

ROOT = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = ROOT / "mailtee-pull.service"
TIMER = ROOT / "mailtee-pull.timer"


def test_pull_service_and_timer_settings() -> None:
    svc = {k: v[-1] for k, v in directives(SERVICE.read_text())["Service"].items()}
    assert svc["Type"] == "oneshot"
    assert svc["ExecStart"] == f"{INSTALLED_BINARY} --config /etc/mailtee/config.toml pull"
    assert svc["User"] == "mailtee" and svc["ProtectSystem"] == "strict"
    assert "/var/lib/mailtee" in svc["ReadWritePaths"].split()
    timer = directives(TIMER.read_text())
    assert timer["Timer"]["Unit"] == ["mailtee-pull.service"]
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Timer"]["Persistent"] == ["true"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def _verify(tmp_path: Path, service_text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "mailtee-pull.service").write_text(service_text)
    (tmp_path / "mailtee-pull.timer").write_text(TIMER.read_text())
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", str(tmp_path / "mailtee-pull.timer"),
         str(tmp_path / "mailtee-pull.service")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


@needs_analyze
def test_systemd_analyze_verify_accepts_the_pull_units(tmp_path: Path) -> None:
    text = SERVICE.read_text().replace(INSTALLED_BINARY, proxy_admin_here())
    res = _verify(tmp_path, text)
    complaints = [ln for ln in res.stderr.splitlines() if "mailtee-pull" in ln]
    assert res.returncode == 0 and complaints == [], res.stderr


@needs_analyze
def test_pull_unit_verify_is_meaningful(tmp_path: Path) -> None:
    res = _verify(tmp_path, SERVICE.read_text().replace(INSTALLED_BINARY, str(tmp_path / "no")))
    assert res.returncode != 0
