"""admin/cli_fast.py: the console script answers the plain `search` without typer, and
what it prints, its exit code and its audit row are those of the typer command; every
other command line, and every failure, goes to the typer command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from archive_helpers import jp_message, make_message, write_report
from test_cli_archive import Cli

from admin.cli_fast import SearchArgs, parse_search

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "import sys; from admin.cli_fast import main; sys.argv[0] = 'proxy-admin'; main()"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    c = Cli(tmp_path_factory.mktemp("fast"))
    reports = c.state / "reports"
    write_report(reports, jp_message(frm="Alice <alice@example.com>"))
    write_report(reports, make_message("quarterly report", "numbers", frm="Bob <bob@example.com>"))
    write_report(
        reports, make_message("invoice \x1b]0;x\x07 due", "pay", frm="Evil <e@example.org>")
    )
    for i in range(3):
        write_report(reports, make_message(f"report {i}", "more", frm="Carol <c@example.com>"))
    assert c.json("ingest")["new_messages"] == 6
    assert c("user", "add", "alice", "--email", "alice@example.com").exit_code == 0
    return c


def _run(store: Cli, args: list[str], *, full: bool, importtime: bool = False):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "MAILTEE_CONFIG"}
    env["MAILTEE_CLI_FULL"] = "1" if full else "0"
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-c", SCRIPT, "--config", str(store.config), *args],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip


def _audits(store: Cli) -> int:
    with sqlite3.connect(store.state / "archive" / "catalog.sqlite") as db:
        return db.execute("SELECT count(*) FROM audit WHERE action = 'search'").fetchone()[0]


CASES = [
    ["search", "report"],
    ["search", "report", "--json"],
    ["search", "--limit", "2", "report"],
    ["search", "report", "-n", "1"],
    ["search", "-n2", "--json", "report"],
    ["search", "--limit=3", "report"],
    ["search", "--user", "alice", "請求書"],
    ["search", "-u", "alice", "--json", "quarterly"],
    ["search", "-from:bob report"],
    ["search", "--json", "--", "-from:carol report"],
    ["search", "invoice"],  # control characters escaped alike
    ["search", "nothing-matches-this"],  # "no matches" on stderr
    ["search", "subject:("],  # a query the parser refuses: the typer command reports it
    ["search", "report", "--user", "nobody"],  # an unknown user: an error
    ["search", "report", "-n", "0"],  # out of range: typer's usage error
    ["search", "report", "extra"],  # a second positional
    ["search", "--help"],
    ["search"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a))
def test_the_script_prints_what_the_typer_command_prints(store: Cli, args: list[str]) -> None:
    before = _audits(store)
    fast = _run(store, args, full=False)
    middle = _audits(store)
    full = _run(store, args, full=True)
    after = _audits(store)
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        full.returncode, full.stdout, full.stderr
    )  # fmt: skip
    assert middle - before == after - middle  # one audit row each, or none each


def test_a_plain_search_loads_no_typer(store: Cli) -> None:
    r = _run(store, ["search", "report", "--json"], full=False, importtime=True)
    assert r.returncode == 0
    modules = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "archive.store" in modules  # (the profile is there)
    assert not {m for m in modules if m.split(".")[0] in ("typer", "click", "pydantic")}
    full = _run(store, ["search", "report", "--help"], full=False, importtime=True)
    assert "typer" in {line.split("|")[-1].strip() for line in full.stderr.splitlines()}


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["search", "q"], SearchArgs(query="q")),
        (["--config", "c.toml", "search", "q"], SearchArgs(config=Path("c.toml"), query="q")),
        (["--config=c.toml", "search", "-q"], SearchArgs(config=Path("c.toml"), query="-q")),
        (["search", "--json", "-n7", "q"], SearchArgs(query="q", limit=7, json_out=True)),
        (["search", "q", "--user=al", "--limit", "3"], SearchArgs(query="q", user="al", limit=3)),
        (["search", "--", "--json"], SearchArgs(query="--json")),
    ],
)
def test_plain_forms_are_parsed(argv: list[str], expected: SearchArgs) -> None:
    assert parse_search(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["show", "1"],
        ["search"],
        ["search", "-h"],
        ["search", "q", "--help"],
        ["search", "a", "b"],
        ["search", "q", "--json", "--json"],
        ["search", "q", "-n", "0"],
        ["search", "q", "-n", "５"],
        ["search", "q", "-n"],
        ["search", "q", "--limit="],
        ["search", "q", "-nx"],
        ["search", "q", "--user", "-x"],
        ["search", "q", "--jsn"],
        ["search", "--json=1", "q"],
        ["search", "--", "a", "b"],
        ["search", "q", "--", "r"],
        ["--config", "", "search", "q"],
        ["--config", "--help", "search", "q"],
        ["search", "q", "--config", "c.toml"],
    ],
)
def test_everything_else_goes_to_the_typer_command(argv: list[str]) -> None:
    assert parse_search(argv) is None


def _run_to(store: Cli, stdout: int, *, full: bool):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "MAILTEE_CONFIG"}
    env["MAILTEE_CLI_FULL"] = "1" if full else "0"
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, "--config", str(store.config), "search", "report"],
        stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip


def test_output_that_cannot_be_written_ends_as_the_typer_command_ends(store: Cli) -> None:
    """A closed pipe (`| head` gone): exit 1, nothing said. A full disk (/dev/full): one
    error line, exit 1. Both after the audit row, as in the typer command."""
    results = {}
    for full in (False, True):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            piped = _run_to(store, write_end, full=full)
        finally:
            os.close(write_end)
        with open("/dev/full", "w") as devfull:
            disk = _run_to(store, devfull.fileno(), full=full)
        results[full] = (piped.returncode, piped.stderr, disk.returncode, disk.stderr)
    assert results[False] == results[True]
    piped_code, piped_err, disk_code, disk_err = results[False]
    assert (piped_code, piped_err) == (1, "")
    assert disk_code == 1 and disk_err.startswith("proxy-admin: error: ")
