"""Typed `.mpr` sections: the bytes on disk are those the dict-built reports had."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from archive.report_sections import (
    ClientSection,
    MessageStart,
    Pop3Section,
    SessionReport,
    SmtpSection,
    TargetSection,
)
from archive.spool import MessageWriter

WHEN = dt.datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=dt.UTC)
ID = "3f2b1c9e-6a7d-4e8f-9b0a-1c2d3e4f5a6b"


def legacy(section: dict[str, Any], client_tls: str | None) -> dict[str, Any]:
    """What proxy/session.py built before the sections were typed (verbatim logic)."""
    report: dict[str, Any] = {
        "listener": "smtp",
        "client": {"ip": "192.0.2.10", "port": 51234, "tls": client_tls},
        "target": {"host": "smtp.example.net", "port": 587, "tls": "TLSv1.3"},
    }
    report.update(section)
    report.setdefault("smtp", None)
    report.setdefault("pop3", None)
    return report


def typed(start: MessageStart, client_tls: str | None) -> SessionReport:
    return SessionReport(
        listener="smtp",
        client=ClientSection("192.0.2.10", 51234, client_tls),
        target=TargetSection("smtp.example.net", 587, "TLSv1.3"),
        start=start,
    )


def mpr(tmp_path: Path, protocol: str, report: Any) -> bytes:
    w = MessageWriter(tmp_path, protocol, report, received_at=WHEN, id=ID)
    w.write(b"Subject: x\r\n\r\nbody\r\n")
    return w._encode("delivered", "250 2.0.0 Ok: queued as 4F1")


def test_smtp_report_bytes_are_unchanged(tmp_path: Path) -> None:
    old = {
        "direction": "outgoing",
        "smtp": {"helo": "pc1", "mail_from": "", "rcpt_to": ["b@y", "bcc@z"], "auth_user": None},
    }
    new = MessageStart("outgoing", smtp=SmtpSection("pc1", "", ("b@y", "bcc@z"), None))
    assert new.to_json() == old
    assert mpr(tmp_path, "smtp", typed(new, None)) == mpr(tmp_path, "smtp", legacy(old, None))


def test_pop3_report_bytes_are_unchanged(tmp_path: Path) -> None:
    old = {"direction": "incoming", "pop3": {"user": "alice", "uidl": "u-1", "msg": 3}}
    new = MessageStart("incoming", pop3=Pop3Section("alice", "u-1", 3))
    got = mpr(tmp_path, "pop3", typed(new, "TLSv1.3"))
    assert got == mpr(tmp_path, "pop3", legacy(old, "TLSv1.3"))
    assert got.startswith(b'{"format": "mailtee-mpr", "version": 1, "id": "' + ID.encode())
    assert b'"pop3": {"user": "alice", "uidl": "u-1", "msg": 3}' in got
    assert b'"smtp": null' in got and got.endswith(b"}\n")


def test_plain_json_reports_still_work(tmp_path: Path) -> None:
    """Pulled and journal reports are still handed over as JSON (archive/pull/writer.py)."""
    report = {"direction": "archived", "listener": None, "pull": {"mailbox": "m"}}
    doc = MessageWriter(tmp_path, "imap", report).document("delivered", None)
    assert doc["pull"] == {"mailbox": "m"} and doc["client"] is None
    assert list(doc)[-2:] == ["pull", "upstream"]
