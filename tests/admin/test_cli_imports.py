"""proxy-admin starts fast because it imports only what the chosen command needs.

Structural, not timing (issue 12 item 4): in a fresh interpreter, importing admin.cli and
printing the help of every command must not load the archive, service, TLS, LDAP or
pydantic stacks. The rule these tests enforce is documented at the top of admin/cli.py.
Figures are in docs/performance.md (bench/cli_startup.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Top-level packages a bare `proxy-admin` / `--help` must not import.
HEAVY = (
    "archive",
    "proxy",
    "pydantic",
    "pydantic_core",
    "cryptography",
    "OpenSSL",
    "ldap3",
    "tantivy",
    "sqlite_utils",
    "zstandard",
    "trio",
    "rich",
    "ssl",
    "accounts",
    "authlib",
    "requests",
    "argon2",
    "web",
    "starlette",
    "imapclient",
)

_PROBE = """
import json, sys
import typer
from typer.core import TyperGroup
import admin.cli
from admin.cli import app

def walk(cmd, path=()):
    yield path
    if isinstance(cmd, TyperGroup):
        for name, sub in cmd.commands.items():
            yield from walk(sub, (*path, name))

paths = list(walk(typer.main.get_command(app))) if "--help" in sys.argv else []
codes = {}
for path in paths:
    try:
        app([*path, "--help"], prog_name="proxy-admin", standalone_mode=False)
        codes[" ".join(path)] = 0
    except SystemExit as e:
        codes[" ".join(path)] = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"heavy": heavy, "codes": codes, "admin_config": "admin.config" in sys.modules}))
"""


def _probe(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_stack() -> None:
    result = _probe()
    assert result["heavy"] == []
    assert result["admin_config"] is False


def test_help_of_every_command_works_without_the_heavy_stacks() -> None:
    result = _probe("--help")
    assert len(result["codes"]) > 20, result["codes"]  # the walk really found the commands
    expected = {"", "search", "listener add", "user add", "user set", "tls ca", "reload"}
    assert expected <= set(result["codes"])
    failed = {path: code for path, code in result["codes"].items() if code not in (0, None)}
    assert failed == {}
    # typer >= 0.29 coerces parsed options through pydantic TypeAdapters; the plain ones
    # (here the root's --config) are parsed by admin.cli_coerce without it
    assert result["heavy"] == []
    assert result["admin_config"] is False


def test_console_script_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from admin.cli import main; main()", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: proxy-admin")


def test_ldap_filter_default_matches_the_library() -> None:
    from admin.cli_archive import LDAP_DEFAULT_FILTER
    from archive.ldap_sync import LdapSettings

    assert LDAP_DEFAULT_FILTER == LdapSettings.filter


_SEARCH_PROBE = """
import json, sys
from admin.cli import app
try:
    app(["--config", sys.argv[1], "search", "--json", "hello"], prog_name="proxy-admin",
        standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_search_imports_no_tls_ldap_service_or_schema_stack(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from admin.cli import app

    config = tmp_path / "etc" / "config.toml"
    r = CliRunner().invoke(app, ["--config", str(config), "init", "--state-dir", "state"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["--config", str(config), "ingest"])  # creates the catalog
    assert r.exit_code == 0, r.output
    out = subprocess.run(
        [sys.executable, "-c", _SEARCH_PROBE, str(config)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "tantivy" in loaded  # it did search
    # sqlite_utils is for creating/migrating the catalog, not for reading it
    assert loaded & {"sqlite_utils", "cryptography", "OpenSSL", "ldap3", "trio", "rich"} == set()


#: What `proxy-admin search` must not load (issue 12 item 4: p95 <= 100 ms): the config
#: model (pydantic), the MIME side (email.*), mailbox, TLS, the service and the rest.
SEARCH_MUST_NOT_LOAD = (
    "pydantic",
    "pydantic_core",
    "email",
    "mailbox",
    "ssl",
    "_ssl",
    "trio",
    "rich",
    "sqlite_utils",
    "cryptography",
    "OpenSSL",
    "ldap3",
    "proxy",
    "accounts",
    "web",
    "admin.config",
    "archive.ingest",
    "archive.mime",
    "archive.importer",
    "zstandard",  # no blob is read
    "_hashlib",  # OpenSSL's libcrypto: nothing is hashed
)

#: The console script's own entry point, reporting sys.modules when the process ends, and
#: how: os._exit (a read-only command skipping the teardown, admin/cli_exit.py) or atexit.
_MAIN_PROBE = """
import atexit, json, os, sys
def report(how):
    print(json.dumps({"how": how, "modules": sorted(sys.modules)}), file=sys.stderr)
    sys.stderr.flush()
real_exit = os._exit
def _exit(code):
    report("os._exit")
    real_exit(code)
os._exit = _exit
atexit.register(report, "atexit")
from admin.cli import main
main()
"""


def _main(*args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = subprocess.run(
        [sys.executable, "-c", _MAIN_PROBE, *args], cwd=ROOT, capture_output=True, text=True
    )
    return out, json.loads(out.stderr.strip().splitlines()[-1])


def test_search_command_loads_only_catalog_index_and_cli(tmp_path: Path) -> None:
    """A real `proxy-admin search` process on a small real store (a few imported mails)
    finds them and leaves the heavy stacks unloaded."""
    from typer.testing import CliRunner

    from admin.cli import app

    config = tmp_path / "etc" / "config.toml"
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i in range(3):
        (maildir / "cur" / f"{i}.host:2,S").write_bytes(
            b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
            b"Subject: quarterly invoice %d\r\nDate: Tue, 1 Dec 2026 10:0%d:00 +0000\r\n"
            b"Message-ID: <m%d@example.org>\r\n\r\nThe invoice is attached.\r\n" % (i, i, i)
        )
    runner = CliRunner()
    r = runner.invoke(app, ["--config", str(config), "init", "--state-dir", "state"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--config", str(config), "import", str(maildir)])
    assert r.exit_code == 0, r.output
    out, end = _main("--config", str(config), "search", "invoice")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("quarterly invoice") == 3, out.stdout
    assert end["how"] == "os._exit"  # read-only: no interpreter teardown
    loaded = end["modules"]
    assert {"tantivy", "sqlite3", "archive.store", "archive.index"} <= set(loaded)
    heavy = [
        m for m in loaded if m in SEARCH_MUST_NOT_LOAD or m.split(".")[0] in SEARCH_MUST_NOT_LOAD
    ]
    assert heavy == []

    # a command that changes something exits normally (atexit handlers, teardown)
    out, end = _main("--config", str(config), "listener", "list")
    assert out.returncode == 0, out.stderr
    assert end["how"] == "atexit"
    # and a failing search keeps its exit code and one-line error
    out, end = _main("--config", str(config), "search", "--limit", "0", "x")
    assert out.returncode == 2 and end["how"] == "atexit"
    assert out.stderr.startswith("proxy-admin: error: Invalid value for '--limit'")


@pytest.mark.parametrize("args", [["--help"], ["listener", "add", "-h"], ["search", "--help"]])
def test_help_ends_without_teardown_and_prints_everything(args: list[str]) -> None:
    out, end = _main(*args)
    assert out.returncode == 0, out.stderr
    assert end["how"] == "os._exit"
    assert out.stdout.startswith(f"Usage: proxy-admin {' '.join(args[:-1])}".rstrip())
    assert out.stdout.rstrip().endswith("Show this message and exit.") or "Commands:" in out.stdout
