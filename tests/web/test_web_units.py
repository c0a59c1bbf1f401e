"""The web side's pure parts: sanitiser, MIME part scanner, sessions, throttle, languages."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from web_mails import INVOICE_ATTACHMENT, INVOICE_FILENAME, hostile, invoice

from web.downloads import content_disposition
from web.i18n import pick_language
from web.parts import decoded, scan, text_of
from web.sanitize import clean_html
from web.sessions import Db, SessionStore, token_hash
from web.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sanitiser_drops_everything_that_runs_loads_or_submits() -> None:
    from web_mails import BEACON_HOST, HOSTILE_HTML

    out = clean_html(HOSTILE_HTML)
    low = out.lower()
    for bad in (
        "<script",
        "onerror",
        "onload",
        "javascript:",
        "<form",
        "<iframe",
        "<object",
        "<svg",
        "<meta",
        "<base",
        "<link",
        "<style",
        "url(",
        "poster",
        BEACON_HOST,
    ):
        assert bad not in low, bad
    assert "This text must stay." in out and "color:#c00" in out
    assert clean_html('<img src="data:image/png;base64,AAAA">') == (
        '<img src="data:image/png;base64,AAAA">'
    )
    assert "href" not in clean_html('<a href="vbscript:x">x</a>')


def test_parts_give_the_attachment_bytes_and_its_japanese_name() -> None:
    raw = invoice().data
    st = scan(io.BytesIO(raw))
    [att] = st.attachments()
    assert att.filename == INVOICE_FILENAME
    assert b"".join(decoded(io.BytesIO(raw), att)) == INVOICE_ATTACHMENT
    [body] = st.text_parts("plain")
    assert "請求書を添付にてお送りいたします。" in text_of(io.BytesIO(raw), body)


def test_parts_of_nested_multipart_and_a_text_html_attachment() -> None:
    st = scan(io.BytesIO(hostile().data))
    assert [p.content_type for p in st.parts] == ["text/plain", "text/html", "text/html"]
    assert [p.is_attachment for p in st.parts] == [False, False, True]
    assert st.parts[2].filename == "page.html"


def test_parts_survive_broken_structure() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n'
    st = scan(io.BytesIO(raw + b"\r\nno closing boundary\r\n"))
    assert len(st.parts) == 1 and st.parts[0].end == len(raw) + 23
    assert scan(io.BytesIO(b"")).parts == []
    assert len(scan(io.BytesIO(b"x" * 200_000)).parts) == 0  # one endless header line


def test_quoted_printable_and_chunk_boundaries() -> None:
    body = ("=E3=81=82" * 30000 + "=\r\n" + "end").encode()
    raw = (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body
    )
    st = scan(io.BytesIO(raw))
    assert text_of(io.BytesIO(raw), st.parts[0]) == "あ" * 30000 + "end"


def test_content_disposition_has_an_ascii_fallback_and_the_utf8_name() -> None:
    value = content_disposition("請求書.pdf")
    assert value.startswith('attachment; filename="')
    assert "filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.pdf" in value
    hostile = content_disposition('a"b\r\n; filename=evil.exe')
    assert "\r" not in hostile and "\n" not in hostile
    fallback = hostile.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback == "a_b____filename_evil.exe"
    assert hostile.count("filename=") == 1  # the injected parameter stays inside quotes


def test_redirect_targets_stay_on_this_site() -> None:
    from web.pages import safe_next

    assert safe_next("/message/3?back=x") == "/message/3?back=x"
    for bad in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x", ""):
        assert safe_next(bad) == "/search", bad


def test_sessions_expire_when_idle_and_after_their_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    db = Db(tmp_path / "web" / "sessions.sqlite")
    store = SessionStore(db, lifetime=100, idle=30, clock=clock)
    token, session = store.create("keiri", "user", "127.0.0.1")
    stored = db.conn.execute("SELECT * FROM sessions").fetchall()
    assert token_hash(token) in str(stored) and token not in str(stored)
    assert (tmp_path / "web" / "sessions.sqlite").stat().st_mode & 0o077 == 0
    for _ in range(3):
        clock.now += 29
        got = store.get(token)  # activity keeps it alive...
        assert got is not None and got.user == "keiri" and got.csrf == session.csrf
    clock.now += 29
    assert store.get(token) is None  # ...until the absolute lifetime (116 s > 100 s)
    token, _ = store.create("keiri", "user", "127.0.0.1")
    clock.now += 31
    assert store.get(token) is None  # idle
    assert store.get("made-up") is None and store.get(None) is None
    token, s = store.create("keiri", "user", "127.0.0.1")
    assert s.csrf_ok(s.csrf) and not s.csrf_ok("x") and not s.csrf_ok(None)
    store.drop(token)
    assert store.get(token) is None


def test_throttle_counts_failures_per_key_in_a_window(tmp_path: Path) -> None:
    clock = Clock()
    t = Throttle(Db(tmp_path / "s.sqlite"), max_failures=3, window=60, clock=clock)
    keys = ["account:keiri", "client:10.0.0.1"]
    for _ in range(3):
        assert t.retry_after(keys) == 0
        t.failed(keys)
    assert t.retry_after(keys) == 60
    assert t.retry_after(["account:other", "client:10.0.0.1"]) == 60  # same address
    assert t.retry_after(["account:other", "client:10.0.0.2"]) == 0
    clock.now += 61
    assert t.retry_after(keys) == 0


def test_language_choice() -> None:
    assert pick_language(None, None, "ja-JP,ja;q=0.9,en;q=0.8") == "ja"
    assert pick_language(None, None, "fr, en;q=0.5, ja;q=0.4") == "en"
    assert pick_language(None, "ja", "en") == "ja"
    assert pick_language("en", "ja", "ja") == "en"
    assert pick_language("xx", None, None) == "en"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/mixed; boundary=x\r\n",
                b'Content-Type: multipart/alternative; boundary="y"\r\n',
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Transfer-Encoding: quoted-printable\r\n",
                b"Content-Disposition: attachment; filename*=UTF-8''%E8%AB%8B\r\n",
                b"\r\n",
                b"--x\r\n",
                b"--x--\r\n",
                b"--y\r\n",
                b"--y--\r\n",
                b"QUJD=\r\n",
                b"=E3=81\r\n",
                b"text\n",
                b"\xff\xfe\x00",
            ]
        )
        | st.binary(max_size=40),
        max_size=40,
    )
)
def test_any_bytes_scan_and_decode_without_raising(chunks: list[bytes]) -> None:
    raw = b"".join(chunks)
    structure = scan(io.BytesIO(raw))
    for part in structure.parts:
        assert 0 <= part.start <= part.end <= len(raw)
        b"".join(decoded(io.BytesIO(raw), part))
        text_of(io.BytesIO(raw), part)
