"""The search page's paging and the filters that need no syntax (dates, direction)."""

from __future__ import annotations

import re

import pytest
from web_helpers import WebSite

from archive.spool import Spool
from archive.store import Archive

pytestmark = pytest.mark.e2e


def _mail(n: int, day: int) -> bytes:
    return (
        f"From: Keiri <keiri@example.jp>\r\nTo: tokuisaki@example.net\r\n"
        f"Subject: paging test {n:02d}\r\nMessage-ID: <paging-{n}@example.jp>\r\n"
        f"Date: {day:02d} Oct 2026 09:{n % 60:02d}:00 +0000\r\n\r\nbody {n}\r\n"
    ).encode()


def _report(reports, raw: bytes, direction: str) -> None:  # type: ignore[no-untyped-def]
    """A report pair exactly as the relay writes it (outgoing SMTP or incoming POP3)."""
    smtp = direction == "outgoing"
    report = {
        "direction": direction,
        "listener": "smtp" if smtp else "pop3",
        "client": {"ip": "192.0.2.10", "port": 5000, "tls": None},
        "target": {"host": "provider.example", "port": 587 if smtp else 995, "tls": None},
        "smtp": {"helo": "pc", "mail_from": "keiri@example.jp", "rcpt_to": [], "auth_user": None}
        if smtp
        else None,
        "pop3": None if smtp else {"user": "keiri", "uidl": "u", "msg": 1},
    }
    w = Spool(reports).open_message("smtp" if smtp else "pop3", report)
    w.write(raw)
    w.commit("delivered")


@pytest.fixture(scope="module")
def site(web_site) -> WebSite:  # type: ignore[no-untyped-def]
    site = web_site()
    reports = site.state_dir / "reports"
    for n in range(55):  # 1-30 Oct; 40 outgoing, 15 incoming
        _report(reports, _mail(n, 1 + n % 30), "outgoing" if n < 40 else "incoming")
    with Archive(site.state_dir) as archive:
        assert archive.ingest_pending(reports).new_messages == 55
    return site


def _rows(html: str) -> list[str]:
    return re.findall(r"paging test (\d\d)", html)


def test_results_come_in_pages_of_50_newest_first(site: WebSite) -> None:
    c = site.client()
    c.login("keiri")
    first = c.get("/search?q=paging")
    assert "55 messages" in first.text
    rows = _rows(first.text)
    assert len(rows) == 50
    days = [int(n) % 30 for n in rows]
    assert days == sorted(days, reverse=True)  # newest first
    assert 'id="older"' in first.text and 'id="newer"' not in first.text
    second = c.get("/search?q=paging&page=2")
    assert len(_rows(second.text)) == 5 and 'id="newer"' in second.text
    assert set(_rows(first.text)).isdisjoint(_rows(second.text))


def test_date_fields_and_direction_filter_without_syntax(site: WebSite) -> None:
    c = site.client()
    c.login("keiri")
    page = c.get("/search?q=paging&after=2026-10-10&before=2026-10-11")
    got = sorted(int(n) for n in _rows(page.text))
    assert got == [9, 10, 39, 40], got  # days 10 and 11, the "to" day included
    incoming = c.get("/search?q=paging&dir=incoming")
    assert "15 messages" in incoming.text
    assert all(int(n) >= 40 for n in _rows(incoming.text))
    assert ">Incoming<" in incoming.text
    outgoing = c.get("/search?q=paging&dir=outgoing&page=1")
    assert "40 messages" in outgoing.text


def test_a_query_the_language_cannot_read_gets_one_clear_line(site: WebSite) -> None:
    c = site.client()
    c.login("keiri")
    page = c.get("/search?q=has:pizza")
    assert page.status == 200
    assert "The search could not be read: has:pizza: only has:attachment is supported" in page.text
