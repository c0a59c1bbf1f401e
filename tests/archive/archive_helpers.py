"""Helpers for the archive tests: report pairs written by the real spool writer, messages."""

from __future__ import annotations

import email.header
import email.utils
from pathlib import Path

from archive.spool import MessageWriter, Spool

JP_SUBJECT = "【至急】請求書の送付について"


def write_report(
    reports_dir: Path,
    raw: bytes,
    protocol: str = "smtp",
    *,
    mail_from: str = "sender@example.com",
    rcpt: list[str] | None = None,
    pop3_user: str | None = None,
    outcome: str = "pending",
) -> MessageWriter:
    """Commit one `.eml` + `.mpr` pair exactly as the relay does."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    if protocol == "smtp":
        report = {
            "direction": "outgoing",
            "listener": "smtp",
            "client": {"ip": "192.0.2.10", "port": 51234, "tls": None},
            "target": {"host": "smtp.example.net", "port": 587, "tls": "TLSv1.3"},
            "smtp": {
                "helo": "pc1",
                "mail_from": mail_from,
                "rcpt_to": rcpt or [],
                "auth_user": None,
            },
            "pop3": None,
        }
    else:
        report = {
            "direction": "incoming",
            "listener": "pop3",
            "client": {"ip": "192.0.2.20", "port": 40000, "tls": None},
            "target": {"host": "pop.example.net", "port": 995, "tls": "TLSv1.3"},
            "smtp": None,
            "pop3": {"user": pop3_user, "uidl": "u1", "msg": 1},
        }
    w = Spool(reports_dir).open_message(protocol, report)
    w.write(raw)
    w.commit(outcome)
    return w


def make_message(
    subject: str = "hello",
    body: str = "hello world",
    *,
    frm: str = "Alice <alice@example.com>",
    to: str = "bob@example.com",
    cc: str | None = None,
    charset: str = "utf-8",
    date: str = "Tue, 24 Nov 2026 10:00:00 +0000",
    extra: str = "",
    msgid: str | None = None,
) -> bytes:
    subj = email.header.Header(subject, charset).encode() if not subject.isascii() else subject
    head = f"From: {frm}\r\nTo: {to}\r\n"
    if cc:
        head += f"Cc: {cc}\r\n"
    head += (
        f"Subject: {subj}\r\nDate: {date}\r\n"
        f"Message-ID: {msgid or email.utils.make_msgid(domain='example.com')}\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset={charset}\r\n"
    )
    data = body.encode(charset)
    if charset == "utf-8" and not body.isascii():
        head += "Content-Transfer-Encoding: 8bit\r\n"
    else:
        head += "Content-Transfer-Encoding: 7bit\r\n"
    return head.encode() + b"\r\n" + data.replace(b"\n", b"\r\n") + b"\r\n"


def jp_message(**kw: object) -> bytes:
    kw.setdefault("subject", JP_SUBJECT)
    kw.setdefault("body", "いつもお世話になっております。\n請求書を送付いたします。")
    kw.setdefault("charset", "iso-2022-jp")
    return make_message(**kw)  # type: ignore[arg-type]


def ids(hits: list) -> list[int]:
    return [h.id for h in hits]
