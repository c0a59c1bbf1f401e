"""Text from mail never drives the operator's terminal: `search` and `show` print control
characters (ESC, BEL, C1, a lone CR) and bidi overrides as escapes, while `--json` and
`show --raw` keep the exact values."""

from __future__ import annotations

import pytest
from archive_helpers import JP_SUBJECT, write_report
from test_cli_archive import Cli

from admin.cli_common import clip, error_line, terminal_safe

#: a title change (OSC ... BEL), a screen clear and a colour (CSI), an 8-bit CSI (C1) and
#: a right-to-left override that would show "invoice exe.pdf" as "invoice fdp.exe"
HOSTILE = "invoice \x1b]0;pwned\x07 \x1b[2J\x1b[31mred \x9b1m \u202efdp.exe"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


def _hostile_eml() -> bytes:
    head = (
        f"From: Evil <evil@example.org>\r\nTo: ops@example.com\r\nSubject: {HOSTILE}\r\n"
        "Message-ID: <hostile-1@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    body = "first line\r\n\x1b[2Jcleared\rover\r\n\tindented\r\n"
    return (head + body).encode("utf-8")


@pytest.fixture
def cli(tmp_path) -> Cli:  # type: ignore[no-untyped-def]
    c = Cli(tmp_path)
    write_report(c.state / "reports", _hostile_eml())
    assert c.json("ingest")["new_messages"] == 1
    return c


def test_search_table_escapes_controls_and_json_keeps_them(cli: Cli) -> None:
    r = cli("search", "invoice")
    assert r.exit_code == 0, r.stderr
    assert not any(ch in r.stdout for ch in RAW_CONTROLS), repr(r.stdout)
    assert "\\x1b]0;pwned\\x07" in r.stdout and "\\x9b1m" in r.stdout
    assert "\\u202e" in r.stdout  # (the column cuts the rest)
    (hit,) = cli.json("search", "invoice")["hits"]
    assert hit["subject"] == HOSTILE  # the exact value, JSON-escaped on the wire


def test_show_escapes_fields_and_body_but_keeps_lines(cli: Cli) -> None:
    (hit,) = cli.json("search", "invoice")["hits"]
    r = cli("show", str(hit["id"]))
    assert r.exit_code == 0, r.stderr
    assert not any(ch in r.stdout for ch in RAW_CONTROLS), repr(r.stdout)
    assert "subject:" in r.stdout and "\\x1b[2J\\x1b[31mred" in r.stdout
    # the body keeps its lines and tabs; the lone CR that would overwrite a line shows
    assert "first line\n\\x1b[2Jcleared\\x0dover\n\tindented" in r.stdout
    raw = cli("show", str(hit["id"]), "--raw")
    assert raw.stdout_bytes == _hostile_eml()


def test_terminal_safe() -> None:
    assert terminal_safe("plain ascii") == "plain ascii"
    assert terminal_safe(JP_SUBJECT) == JP_SUBJECT  # printable text is left alone
    assert terminal_safe("a\x00b\x7fc\x85d") == "a\\x00b\\x7fc\\x85d"
    assert terminal_safe("x\u2066y\u200fz") == "x\\u2066y\\u200fz"
    assert terminal_safe("one\r\ntwo\tthree", multiline=True) == "one\ntwo\tthree"
    assert terminal_safe("one\ntwo") == "one\\x0atwo"
    once = terminal_safe(HOSTILE)
    assert terminal_safe(once) == once
    # a clipped subject is escaped before the cut, which counts the escape's columns
    assert clip("ab\x1bcdef", 6) == "ab\\x1…"
    assert "\x1b" not in error_line("cannot read \x1b]0;x\x07.eml")
