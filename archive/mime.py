"""Turn raw message bytes into searchable text, never raising on broken input.

Theory of operation. The stdlib `email` package (compat32 policy: fast, and it keeps
undecodable header bytes as surrogate escapes we can recover) parses every header block,
its parameters (RFC 2231) and encoded-words (RFC 2047). The MIME tree itself is split by
`bytes.find` on the boundaries (`_Splitter`) so that attachment payloads, most of the bytes
of a mailbox, are never fed line by line through `email.feedparser`; only text parts
are decoded. Anything the splitter finds odd (no boundary, unterminated parts, deep
nesting) sends the whole message through `email.parser.BytesParser` instead. Every
header and text part then goes through `decode_bytes`, which knows the Japanese charsets
by their real-world names: mail labelled Shift_JIS is usually CP932, ISO-2022-JP often
carries CP50220 extensions, and much 8-bit mail has no label at all. Whatever cannot be
decoded is replaced, not fatal: the raw bytes are archived untouched anyway, and the index
only needs what decodes. `parse()` catches everything so broken MIME never stops ingest.
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.header
import email.utils
import html
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from archive.errors import ArchiveError

#: Bound the text indexed per message (the archived bytes are never cut).
MAX_BODY_CHARS = 200_000
#: ... and per text attachment (CSV exports, logs).
MAX_ATTACHMENT_CHARS = 32_000
MAX_PARTS = 500

_CHARSET_ALIASES = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "iso-2022-jp": "iso2022_jp",
    "csiso2022jp": "iso2022_jp",
    "euc-jp": "euc_jp",
    "x-euc-jp": "euc_jp",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "unknown-8bit": "",
    "x-unknown": "",
}
#: Supersets tried when the declared charset fails strictly.
_FALLBACKS = {
    "iso2022_jp": ("iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_2"),
    "euc_jp": ("euc_jis_2004", "cp932"),
    "cp932": ("shift_jis_2004", "euc_jp"),
    "utf-8": ("cp932", "euc_jp", "cp1252"),
}


def _codec(charset: str | None) -> str:
    if not charset:
        return ""
    cs = charset.strip().strip('"').lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if cs:
        try:
            import codecs

            codecs.lookup(cs)
        except LookupError:
            return ""
    return cs


def _guess(data: bytes) -> str:
    if b"\x1b$" in data or b"\x1b(" in data:
        for cs in ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004"):
            try:
                return data.decode(cs)
            except UnicodeDecodeError:
                pass
    for cs in ("utf-8", "cp932", "euc_jp"):
        try:
            return data.decode(cs)
        except UnicodeDecodeError:
            pass
    return data.decode("cp1252", "replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text bytes labelled `charset` (possibly wrong or missing) as well as we can."""
    if data.isascii() and b"\x1b" not in data:
        return data.decode("ascii")
    cs = _codec(charset)
    if not cs:
        return _guess(data)
    for candidate in (cs, *_FALLBACKS.get(cs, ())):
        try:
            return data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        return data.decode(cs, "replace")
    except LookupError:
        return _guess(data)


def _unsurrogate(value: str) -> str:
    """Headers with raw 8-bit bytes arrive as surrogate escapes; decode those bytes."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _guess(value.encode("ascii", "surrogateescape"))


def decode_header(value: object) -> str:
    """RFC 2047 encoded-words (adjacent words joined), raw 8-bit, folding: -> one line."""
    if value is None:
        return ""
    text = _unsurrogate(str(value))
    text = re.sub(r"\r?\n[ \t]*", " ", text)
    if "=?" not in text:
        return text.strip()
    try:
        parts = email.header.decode_header(text)
    except Exception:
        return text.strip()
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset or "utf-8"))
        else:
            out.append(chunk)
    return "".join(out).strip()


@dataclass
class ParsedMessage:
    subject: str = ""
    from_: list[tuple[str, str]] = field(default_factory=list)
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    date: int | None = None  # epoch seconds from the Date header
    message_id: str = ""
    body: str = ""
    attachments: list[str] = field(default_factory=list)
    has_attachment: bool = False
    defects: list[str] = field(default_factory=list)


def _raw_headers(msg: Message) -> dict[str, list[str]]:
    """Header values as parsed, before compat32 turns 8-bit ones into '?' Headers."""
    out: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        out.setdefault(name.lower(), []).append(str(value))
    return out


def _addresses(headers: dict[str, list[str]], name: str) -> list[tuple[str, str]]:
    values = headers.get(name.lower(), [])
    try:
        pairs = email.utils.getaddresses([str(v) for v in values])
    except Exception:
        return []
    out = []
    for display, addr in pairs:
        display = decode_header(display)
        addr = _unsurrogate(addr).strip().lower()
        if addr or display:
            out.append((display, addr))
    return out


def _date(value: object) -> int | None:
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return int(when.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.S | re.I)


def html_to_text(text: str) -> str:
    return html.unescape(_TAGS.sub(" ", text))


def _payload_text(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        raw = part.get_payload()
        data = raw.encode("ascii", "surrogateescape") if isinstance(raw, str) else b""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = decode_bytes(data, charset)
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename() or part.get_param("name")
    except Exception:
        return None
    if isinstance(name, tuple):  # undecoded RFC 2231 triple
        name = email.utils.collapse_rfc2231_value(name)
    if not name:
        return None
    return decode_header(name)


class _Walker:
    def __init__(self, out: ParsedMessage) -> None:
        self.out = out
        self.texts: list[str] = []
        self.size = 0
        self.parts = 0

    def note_attachment(self, part: Message, ctype: str) -> tuple[str | None, bool]:
        """Record `part` as an attachment if it is one (a file name, `Content-Disposition:
        attachment`, a forwarded message); (its file name, whether it is one)."""
        name = _filename(part)
        attached = bool(name) or part.get_content_disposition() == "attachment"
        if attached or ctype == "message/rfc822":
            self.out.has_attachment = True
            if name:
                self.out.attachments.append(name)
            return name, True
        return name, False

    def add_text(self, text: str) -> None:
        if self.size < MAX_BODY_CHARS:
            text = text[: MAX_BODY_CHARS - self.size]
            self.texts.append(text)
            self.size += len(text)

    def walk(self, part: Message) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            return
        ctype = part.get_content_type()
        if part.is_multipart():
            payload = part.get_payload()
            if not isinstance(payload, list):
                return
            children = [c for c in payload if isinstance(c, Message)]
            if ctype == "multipart/alternative":
                plain = [c for c in children if c.get_content_type() == "text/plain"]
                for child in plain[:1] or children[-1:]:
                    self.walk(child)
            else:
                for child in children:
                    self.walk(child)
            return
        _name, attached = self.note_attachment(part, ctype)
        if part.get_content_maintype() == "text":
            text = _payload_text(part)
            self.add_text(text[:MAX_ATTACHMENT_CHARS] if attached else text)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Header block and body: the first empty line ends the headers."""
    if data.startswith((b"\r\n", b"\n")):
        return b"", data[2 if data.startswith(b"\r\n") else 1 :]
    i, j = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if i >= 0 and (j < 0 or i < j):
        return data[:i], data[i + 4 :]
    if j >= 0:
        return data[:j], data[j + 2 :]
    return data, b""


class _Odd(ArchiveError):
    """The fast splitter declines; use the full stdlib parser."""


_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")


def _head(head: bytes) -> Message:
    """Parse one header block; decline (fall back) if it is not purely header lines."""
    for line in head.splitlines():
        if line and not _HEADER_LINE.match(line):
            raise _Odd("not a header line")
    return BytesParser(policy=compat32).parsebytes(head + b"\n\n", headersonly=True)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    delim = b"--" + boundary
    starts = []
    pos = 0 if body.startswith(delim) else body.find(b"\n" + delim)
    while pos >= 0:
        at = pos if body.startswith(delim, pos) else pos + 1
        end_of_line = body.find(b"\n", at)
        closing = body.startswith(delim + b"--", at)
        starts.append((at, end_of_line, closing))
        if closing or end_of_line < 0:
            break
        pos = body.find(b"\n" + delim, end_of_line)
    if not starts or not starts[-1][2]:
        raise _Odd("unterminated multipart")
    parts = []
    for (_at, eol, _c), (nxt, _e, _c2) in zip(starts, starts[1:], strict=False):
        chunk = body[eol + 1 : nxt]
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        parts.append(chunk)
    return parts


def _decode_payload(part: Message, body: bytes) -> bytes:
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if cte == "base64":
            return binascii.a2b_base64(body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        raise _Odd("bad transfer encoding") from None
    return body


class _Splitter(_Walker):
    def split(self, data: bytes, depth: int = 0, digest: bool = False) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS or depth > 20:
            raise _Odd("too deep")
        head, body = _split_head(data)
        part = _head(head)
        ctype = part.get_content_type()
        if part.get_content_maintype() == "multipart":
            boundary = part.get_boundary()
            if not boundary:
                raise _Odd("multipart without boundary")
            children = _split_multipart(body, boundary.encode("ascii", "surrogateescape"))
            if ctype == "multipart/alternative":
                heads = [_head(_split_head(c)[0]).get_content_type() for c in children]
                plain = [c for c, t in zip(children, heads, strict=True) if t == "text/plain"]
                children = plain[:1] or children[-1:]
            for child in children:
                self.split(child, depth + 1, digest=ctype == "multipart/digest")
            return
        if digest and "content-type" not in part:
            ctype = "message/rfc822"
        if ctype == "message/rfc822":  # a forwarded message: an attachment, and searchable
            self.out.has_attachment = True
            self.split(body, depth + 1)
            return
        name, _attached = self.note_attachment(part, ctype)
        if part.get_content_maintype() == "text" and self.size < MAX_BODY_CHARS:
            payload = _decode_payload(part, body)
            text = decode_bytes(payload, part.get_content_charset())
            if part.get_content_subtype() == "html":
                text = html_to_text(text)
            self.add_text(text[:MAX_ATTACHMENT_CHARS] if name else text)


def parse(raw: bytes) -> ParsedMessage:
    """Parse; on any failure keep what was decoded so far and note the defect."""
    try:
        return _parse_fast(raw)
    except Exception:
        return _parse_full(raw)


def _parse_fast(raw: bytes) -> ParsedMessage:
    out = ParsedMessage()
    head, _body = _split_head(raw)
    _fill_headers(out, _head(head))
    walker = _Splitter(out)
    walker.split(raw)
    out.body = "\n".join(walker.texts)
    return out


def _parse_full(raw: bytes) -> ParsedMessage:
    out = ParsedMessage()
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
    except Exception as e:  # pragma: no cover - the parser is very lenient
        out.defects.append(f"unparseable: {type(e).__name__}")
        out.body = _guess(raw[:MAX_BODY_CHARS])
        return out
    _fill_headers(out, msg)
    walker = _Walker(out)
    try:
        walker.walk(msg)
    except Exception as e:
        out.defects.append(f"body: {type(e).__name__}")
    out.body = "\n".join(walker.texts)
    out.defects.extend(type(d).__name__ for d in getattr(msg, "defects", [])[:10])
    return out


def _fill_headers(out: ParsedMessage, msg: Message) -> None:
    headers: dict[str, list[str]] = {}
    try:
        headers = _raw_headers(msg)
    except Exception as e:
        out.defects.append(f"headers: {type(e).__name__}")

    def first(name: str) -> str | None:
        values = headers.get(name)
        return values[0] if values else None

    steps = (
        ("subject", lambda: setattr(out, "subject", decode_header(first("subject")))),
        ("from", lambda: setattr(out, "from_", _addresses(headers, "From"))),
        ("to", lambda: setattr(out, "to", _addresses(headers, "To"))),
        ("cc", lambda: setattr(out, "cc", _addresses(headers, "Cc"))),
        ("bcc", lambda: setattr(out, "bcc", _addresses(headers, "Bcc"))),
        ("date", lambda: setattr(out, "date", _date(first("date")))),
        ("message-id", lambda: setattr(out, "message_id", decode_header(first("message-id")))),
    )
    for what, step in steps:
        try:
            step()
        except Exception as e:
            out.defects.append(f"{what}: {type(e).__name__}")
