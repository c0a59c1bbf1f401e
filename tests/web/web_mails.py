"""Messages for the web tests, as exact bytes: Japanese invoice with a Japanese-named
attachment, and hostile HTML (every trick a mail can play on a browser).

`BEACON_HOST` names an address nobody serves: a request to it in Chromium's network
log is proof that something loaded remote content.
"""

from __future__ import annotations

import base64
import urllib.parse

from fixtures.mails import CRLF, Mail, b64_lines, encoded_word

INVOICE_SUBJECT = "【至急】請求書の送付について"
INVOICE_FILENAME = "請求書_2026年11月.pdf"
INVOICE_ATTACHMENT = b"%PDF-1.4\n% mailtee test invoice\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
BEACON_HOST = "beacon.invalid"


def _join(lines: list[str | bytes]) -> bytes:
    return CRLF.join(x.encode() if isinstance(x, str) else x for x in lines) + CRLF


def invoice(sender: str = "sato@example.co.jp", to: str = "keiri@example.jp") -> Mail:
    """ISO-2022-JP text and a PDF whose name is given both as RFC 2231 (filename*) and
    RFC 2047 (name=), as Japanese mailers do."""
    body = "\r\n".join(
        [
            "株式会社サンプル",
            "経理部 御中",
            "",
            "いつもお世話になっております。",
            "請求書を添付にてお送りいたします。",
            "",
        ]
    ).encode("iso-2022-jp")
    rfc2231 = urllib.parse.quote(INVOICE_FILENAME.encode("utf-8"), safe="")
    data = _join(
        [
            f"From: {encoded_word('佐藤', 'iso-2022-jp')} <{sender}>",
            f"To: {to}",
            f"Subject: {encoded_word(INVOICE_SUBJECT, 'iso-2022-jp')}",
            "Message-ID: <invoice-web@example.co.jp>",
            "Date: Thu, 26 Nov 2026 10:15:00 +0900",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="==b1=="',
            "",
            "--==b1==",
            "Content-Type: text/plain; charset=ISO-2022-JP",
            "Content-Transfer-Encoding: 7bit",
            "",
            body,
            "--==b1==",
            f'Content-Type: application/pdf; name="{encoded_word(INVOICE_FILENAME, "utf-8")}"',
            "Content-Transfer-Encoding: base64",
            f"Content-Disposition: attachment; filename*=UTF-8''{rfc2231}",
            "",
            b64_lines(INVOICE_ATTACHMENT).rstrip(CRLF),
            "--==b1==--",
            "",
        ]
    )
    return Mail(sender, [to], data, name="invoice-ja")


HOSTILE_HTML = f"""<html><head>
<meta http-equiv="refresh" content="0; url=http://{BEACON_HOST}/refresh">
<link rel="stylesheet" href="http://{BEACON_HOST}/link.css">
<style>body {{ background: url(http://{BEACON_HOST}/style-bg.png) }}
@import url("http://{BEACON_HOST}/import.css");</style>
<base href="http://{BEACON_HOST}/">
</head><body>
<h1 id="hostile-title">Hostile test</h1>
<script>document.title = "PWNED-script"; fetch("http://{BEACON_HOST}/script");</script>
<img src="http://{BEACON_HOST}/pixel.gif" width="1" height="1">
<img src=x onerror="document.title='PWNED-onerror'">
<a id="jslink" href="javascript:document.title='PWNED-js'">click me</a>
<p style="background-image: url(http://{BEACON_HOST}/inline-bg.png)">inline beacon</p>
<div style="width:10px; background: u\\72l(http://{BEACON_HOST}/escaped.png)">escaped</div>
<form action="http://{BEACON_HOST}/form" method="post"><input name="q"><button>go</button></form>
<svg xmlns="http://www.w3.org/2000/svg" onload="document.title='PWNED-svg'">
<script>document.title='PWNED-svgscript'</script>
<image href="http://{BEACON_HOST}/svg.png"/></svg>
<iframe src="http://{BEACON_HOST}/frame"></iframe>
<object data="http://{BEACON_HOST}/object"></object>
<video poster="http://{BEACON_HOST}/poster.png"></video>
<p id="safe-text" style="color: #c00; font-weight: bold">This text must stay.</p>
</body></html>"""

HOSTILE_ATTACHMENT = (
    f"<html><body><script>document.title='PWNED-attachment'</script>"
    f"<img src='http://{BEACON_HOST}/att.gif'></body></html>"
).encode()


def hostile(sender: str = "mallory@evil.example", to: str = "keiri@example.jp") -> Mail:
    data = _join(
        [
            f"From: Mallory <{sender}>",
            f"To: {to}",
            "Subject: hostile html test",
            "Message-ID: <hostile@evil.example>",
            "Date: Fri, 27 Nov 2026 09:00:00 +0000",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="outer"',
            "",
            "--outer",
            'Content-Type: multipart/alternative; boundary="alt"',
            "",
            "--alt",
            "Content-Type: text/plain; charset=utf-8",
            "",
            "Plain part of the hostile message.",
            "--alt",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            "",
            b64_lines(HOSTILE_HTML.encode()).rstrip(CRLF),
            "--alt--",
            "--outer",
            'Content-Type: text/html; name="page.html"',
            'Content-Disposition: attachment; filename="page.html"',
            "Content-Transfer-Encoding: base64",
            "",
            base64.b64encode(HOSTILE_ATTACHMENT).decode(),
            "--outer--",
            "",
        ]
    )
    return Mail(sender, [to], data, name="hostile")


def private(n: int, owner: str) -> Mail:
    data = _join(
        [
            f"From: Someone <{owner}>",
            "To: partner@example.net",
            f"Subject: private note {n} of {owner}",
            f"Message-ID: <private-{n}-{owner}>",
            "Date: Wed, 25 Nov 2026 08:00:00 +0000",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"Only {owner} may read this.",
        ]
    )
    return Mail(owner, ["partner@example.net"], data, name=f"private-{n}")
