"""Messages that say what happened (issue 10 item 17): a re-import says it added nothing,
`show` names each fact of a report once."""

from __future__ import annotations

import mailbox
from pathlib import Path

from archive_helpers import make_message, write_report
from test_cli_archive import Cli


def test_reimport_says_nothing_new(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    md = mailbox.Maildir(tmp_path / "Maildir")
    for i in range(5):
        md.add(make_message(f"m{i}", "body"))
    first = cli("import", str(tmp_path / "Maildir"))
    assert first.exit_code == 0, first.output
    assert "5 new message(s)" in first.stdout
    again = cli("import", str(tmp_path / "Maildir"))
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == "imported 5 item(s): nothing new, all already archived"
    assert "update" not in again.stdout


def test_show_names_each_fact_once(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    write_report(cli.state / "reports", make_message("fetched", "x"), "pop3", pop3_user="alice")
    assert cli.json("ingest")["new_messages"] == 1
    (hit,) = cli.json("search", "fetched")["hits"]
    r = cli("show", str(hit["id"]))
    assert r.exit_code == 0, r.output
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("report:")]
    assert "POP3 download, listener pop3, account alice, client 192.0.2.20: " in line, line
    assert line.lower().count("pop3") == 2  # "POP3 download" and the listener's name
