"""The protocol cores are sans-IO: importing them must not import trio, socket or ssl.

Checked in a fresh interpreter (this process has trio loaded by pytest-trio already).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ["trio", "socket", "ssl", "_socket", "_ssl", "asyncio", "selectors", "threading"]
CORE_MODULES = ["proxy.actions", "proxy.settings", "proxy.buffer", "proxy.errors"]
CORE_MODULES += ["proxy.login", "accounts.sasl"]  # OAuth2: local logins, SASL
PACKAGES = ["proxy.smtp", "proxy.pop3"]

PROBE = """
import importlib, json, pkgutil, sys
names = list(sys.argv[1:])
for package in [n for n in names if n in ("proxy.smtp", "proxy.pop3")]:
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError:
        continue
    names += [package + "." + m.name for m in pkgutil.iter_modules(pkg.__path__)]
imported = []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        continue
    imported.append(name)
print(json.dumps({"imported": imported, "modules": sorted(sys.modules)}))
"""


def probe(*names: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + PROBE,
            *names,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_smtp_core_modules_are_found() -> None:
    result = probe(*CORE_MODULES, *PACKAGES)
    for name in ("proxy.smtp.relay", "proxy.smtp.data", "proxy.smtp.ehlo", "proxy.smtp.replies"):
        assert name in result["imported"]


@pytest.mark.parametrize("package", [*CORE_MODULES, *PACKAGES])
def test_core_imports_no_io(package: str) -> None:
    result = probe(package)
    assert result["imported"], f"{package} not importable"
    loaded = set(result["modules"])
    leaked = [m for m in FORBIDDEN if m in loaded]
    assert not leaked, f"importing {package} ({result['imported']}) pulled in {leaked}"
