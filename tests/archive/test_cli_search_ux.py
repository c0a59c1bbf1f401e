"""`proxy-admin search` as a person uses it (issue 10 item 15): negated queries that start
with '-', tables aligned by display width, addresses never cut."""

from __future__ import annotations

import json

import pytest
from archive_helpers import JP_SUBJECT, jp_message, make_message, write_report
from test_cli_archive import Cli

from admin.cli_common import clip, display_width, format_table

LONG_NAME = "Bartholomew Maximilian Featherstonehaugh-Cholmondeley"
LONG_ADDR = "bartholomew.featherstonehaugh@accounts.example.co.jp"


@pytest.fixture
def cli(tmp_path) -> Cli:  # type: ignore[no-untyped-def]
    c = Cli(tmp_path)
    reports = c.state / "reports"
    write_report(reports, jp_message(frm="Alice <alice@example.com>"))
    write_report(reports, jp_message(frm="Bob <bob@example.com>", subject="請求書 再送"))
    write_report(reports, make_message("quarterly 請求書", "x", frm=f"{LONG_NAME} <{LONG_ADDR}>"))
    assert c.json("ingest")["new_messages"] == 3
    return c


def _senders(cli: Cli, *args: str) -> list[str]:
    r = cli("search", *args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return sorted(h["from"] for h in json.loads(r.stdout)["hits"])


def test_query_starting_with_a_dash_is_a_query(cli: Cli) -> None:
    everyone = _senders(cli, "請求書", "--json")
    assert len(everyone) == 3
    without_alice = _senders(cli, "-from:alice 請求書", "--json")
    assert without_alice == [s for s in everyone if "alice" not in s]
    # options before the query, `--limit=`, an explicit `--`: all still work
    assert _senders(cli, "--json", "-n", "5", "-from:alice 請求書") == without_alice
    assert _senders(cli, "--limit=5", "--json", "--", "-from:alice 請求書") == without_alice
    # a real option typo is still an error, not a query
    r = cli("search", "請求書", "--limt", "5")
    assert r.exit_code == 2


def test_table_pads_by_display_width(cli: Cli) -> None:
    r = cli("search", "請求書")
    assert r.exit_code == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert len(rows) == 3
    subject_col = display_width(header[: header.index("SUBJECT")])
    size_col = display_width(header[: header.index("SIZE")])
    for row in rows:
        # every SUBJECT starts in the same terminal column, and so does every SIZE
        subj = next(s for s in (JP_SUBJECT, "請求書 再送", "quarterly 請求書") if s in row)
        assert display_width(row[: row.index(subj)]) == subject_col, row
        # the SIZE column starts at the same column too: the text there is a size
        cut = ""
        for ch in row:
            if display_width(cut) >= size_col:
                break
            cut += ch
        assert display_width(cut) == size_col, row
        assert row[len(cut) :].split()[0][:-1].isdigit(), row


def test_long_sender_shows_the_whole_address(cli: Cli) -> None:
    r = cli("search", "quarterly")
    assert r.exit_code == 0, r.stderr
    (row,) = r.stdout.splitlines()[1:]
    assert LONG_ADDR in row  # the address, uncut, instead of a clipped "Name <addr…"
    assert "…" not in row.split(LONG_ADDR)[0][-3:]


def test_display_width_helpers() -> None:
    assert display_width("請求書") == 6 and display_width("abc") == 3
    assert display_width("e\u0301") == 1  # combining accent
    assert clip("【至急】請求書の送付について", 9) == "【至急】…"
    assert display_width(clip("【至急】請求書の送付について", 9)) <= 9
    table = format_table(["A", "B"], [("請求書", "x"), ("abc", "y")])
    first, second, third = table.splitlines()
    assert [display_width(line[: line.rindex(" ") + 1]) for line in (first, second, third)] == [
        8,
        8,
        8,
    ]
