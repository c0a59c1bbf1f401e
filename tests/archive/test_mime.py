"""Parsing and charset decoding: Japanese charsets, RFC 2047/2231, broken MIME."""

from __future__ import annotations

import base64

from archive_helpers import JP_SUBJECT, jp_message, make_message

from archive import mime


def test_iso_2022_jp_subject_body_and_from_name() -> None:
    raw = jp_message(frm="=?ISO-2022-JP?B?GyRCOzNFRBsoQg==?= <yamada@example.jp>")
    p = mime.parse(raw)
    assert p.subject == JP_SUBJECT
    assert p.from_ == [("山田", "yamada@example.jp")]
    assert "請求書を送付いたします。" in p.body
    assert p.date == 1795514400


def test_shift_jis_label_decodes_cp932_extensions() -> None:
    # ① and 髙 are CP932-only: mail labelled Shift_JIS carries them all the time.
    raw = make_message("件名", "丸数字①と髙橋さん", charset="cp932").replace(
        b"charset=cp932", b"charset=Shift_JIS"
    )
    p = mime.parse(raw)
    assert "丸数字①と髙橋さん" in p.body


def test_euc_jp_and_unlabelled_8bit() -> None:
    assert "日本語" in mime.parse(make_message("x", "日本語のテキスト", charset="euc_jp")).body
    raw = b"Subject: " + "生の件名".encode("cp932") + b"\r\n\r\n" + "本文".encode("cp932")
    p = mime.parse(raw)
    assert p.subject == "生の件名"
    assert p.body == "本文"


def test_utf8_8bit_header_and_split_encoded_words() -> None:
    raw = "Subject: Grüße aus Köln\r\n\r\nx".encode()
    assert mime.parse(raw).subject == "Grüße aus Köln"
    # one ISO-2022-JP string split over two encoded-words (common in Japanese MUAs)
    a = base64.b64encode("請求".encode("iso2022_jp")).decode()
    b = base64.b64encode("書".encode("iso2022_jp")).decode()
    raw = f"Subject: =?ISO-2022-JP?B?{a}?=\r\n =?ISO-2022-JP?B?{b}?=\r\n\r\n".encode()
    assert mime.parse(raw).subject == "請求書"


def test_rfc2231_and_rfc2047_attachment_names() -> None:
    raw = (
        b"Subject: files\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
        b"--b\r\nContent-Type: application/octet-stream;\r\n"
        b' name="=?ISO-2022-JP?B?' + base64.b64encode("見積".encode("iso2022_jp")) + b'?=.xls"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"
        b"--b--\r\n"
    )
    p = mime.parse(raw)
    assert p.has_attachment
    assert p.attachments == ["請求書.pdf", "見積.xls"]
    assert p.body.strip() == "see attached"


def test_html_alternative_prefers_plain_and_strips_tags() -> None:
    raw = (
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b><style>x{}</style></p>\r\n"
        b"--a--\r\n"
    )
    assert mime.parse(raw).body.split() == ["Hi", "there"]


def test_broken_mime_never_raises_and_keeps_what_decodes() -> None:
    cases = [
        b"",
        b"\x00\xff\xfe garbage without headers",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nno end',
        b"Subject: =?utf-8?B?!!!notbase64?=\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@",
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xe6\x97\xa5",
        b"From: <<<>>>, @@,\r\nDate: yesterday-ish\r\n\r\nbody",
        b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n\x1b$B\xff\xff\x1b(B tail",
    ]
    for raw in cases:
        p = mime.parse(raw)
        assert isinstance(p.body, str)
    assert mime.parse(cases[4]).body == "日"
    assert mime.parse(cases[5]).body == "body"
    assert mime.parse(cases[5]).date is None
