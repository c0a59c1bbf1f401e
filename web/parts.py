"""Where each MIME part of a message lies, found in one streaming pass, and its decoded bytes.

Theory of operation. The message page lists attachments and the download route streams
one of them; both must agree on what "attachment 3" is, and neither may hold a 50 MB
attachment in memory. `scan(stream)` reads the raw message line by line (lines capped at
`MAX_LINE`, so a missing line end cannot grow a buffer), keeps a stack of multipart
boundaries and records for every leaf part its header block (capped) and the byte range
of its body in the raw message. `decoded(stream, part)` then skips to that range and
undoes the transfer encoding (base64, quoted-printable, 7bit/8bit/binary) chunk by chunk.

Broken structure never raises: an unterminated multipart simply ends with the message,
headers beyond `MAX_HEADER_BYTES` are dropped, and parts beyond `MAX_PARTS` are not listed
(the original `.eml` is always downloadable).
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import BinaryIO

from archive.mime import decode_bytes, decode_header

MAX_LINE = 64 * 1024
MAX_HEADER_BYTES = 256 * 1024
MAX_PARTS = 500
MAX_DEPTH = 20
CHUNK = 64 * 1024
#: Text shown on the message page is cut here (the rest is in the .eml).
MAX_TEXT_BYTES = 2 * 1024 * 1024

_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")


@dataclass
class Part:
    index: int
    headers: Message
    start: int  # body offset in the raw message
    end: int = -1  # body end (exclusive); -1 = end of message
    content_type: str = "text/plain"
    charset: str | None = None
    encoding: str = "7bit"
    filename: str | None = None
    disposition: str | None = None

    @property
    def is_attachment(self) -> bool:
        main = self.content_type.split("/", 1)[0]
        return (
            bool(self.filename)
            or self.disposition == "attachment"
            or self.content_type == "message/rfc822"
            or main not in ("text", "multipart")
        )

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class Structure:
    headers: Message
    parts: list[Part] = field(default_factory=list)
    size: int = 0

    def attachments(self) -> list[Part]:
        return [p for p in self.parts if p.is_attachment]

    def text_parts(self, subtype: str) -> list[Part]:
        want = f"text/{subtype}"
        return [p for p in self.parts if p.content_type == want and not p.is_attachment]


def filename_of(msg: Message) -> str | None:
    """The decoded file name: RFC 2231 (`filename*=`) or RFC 2047 encoded-words."""
    try:
        name = msg.get_filename() or msg.get_param("name")
    except Exception:
        return None
    if isinstance(name, tuple):
        name = email.utils.collapse_rfc2231_value(name)
    if not name:
        return None
    text = decode_header(str(name))
    # a name is shown and offered as a file name: no path, no control characters
    text = re.sub(r"[\x00-\x1f\x7f/\\]", "_", text).strip()
    return text[:255] or None


def _leaf(index: int, headers: Message, start: int) -> Part:
    part = Part(index, headers, start)
    try:
        part.content_type = headers.get_content_type()
        part.charset = headers.get_content_charset()
        part.disposition = headers.get_content_disposition()
    except Exception:
        part.content_type = "application/octet-stream"
    part.encoding = str(headers.get("content-transfer-encoding", "7bit")).strip().lower()
    part.filename = filename_of(headers)
    return part


def scan(stream: BinaryIO) -> Structure:
    """One pass over the raw message: top headers and every leaf part's body range."""
    boundaries: list[bytes] = []
    offset = 0
    head: list[bytes] = []
    head_bytes = 0
    in_headers = True
    current: Part | None = None
    top: Message | None = None
    parts: list[Part] = []
    prev_eol = 0

    def start_part(hdr: Message, at: int) -> None:
        nonlocal current, top
        if top is None:
            top = hdr
        ctype = hdr.get_content_type() if hdr is not None else "text/plain"
        boundary = hdr.get_boundary() if ctype.startswith("multipart/") else None
        if boundary and len(boundaries) < MAX_DEPTH:
            boundaries.append(boundary.encode("utf-8", "surrogateescape").strip())
            current = None  # preamble: skipped
        elif len(parts) < MAX_PARTS:
            current = _leaf(len(parts) + 1, hdr, at)
            parts.append(current)
        else:
            current = None

    while True:
        line = stream.readline(MAX_LINE)
        if not line:
            break
        line_start = offset
        offset += len(line)
        if in_headers:
            if line in (b"\r\n", b"\n"):
                hdr = _parser.parsebytes(b"".join(head))
                head, head_bytes, in_headers = [], 0, False
                start_part(hdr, offset)
            else:
                if head_bytes < MAX_HEADER_BYTES:
                    head.append(line)
                    head_bytes += len(line)
            prev_eol = _eol(line)
            continue
        if line.startswith(b"--") and boundaries:
            stripped = line.rstrip(b" \t\r\n")
            for level in range(len(boundaries) - 1, -1, -1):
                b = boundaries[level]
                if stripped == b"--" + b or stripped == b"--" + b + b"--":
                    if current is not None:
                        current.end = max(current.start, line_start - prev_eol)
                        current = None
                    del boundaries[level + 1 :]
                    if stripped.endswith(b"--") and stripped != b"--" + b:
                        boundaries.pop()  # close delimiter: the epilogue follows
                    else:
                        in_headers = True
                    break
        prev_eol = _eol(line)
    if in_headers and (head or top is None):
        hdr = _parser.parsebytes(b"".join(head))
        if top is None:
            top = hdr
    if current is not None:
        current.end = offset
    for p in parts:
        if p.end < 0:
            p.end = offset
    return Structure(top if top is not None else Message(), parts, offset)


def _eol(line: bytes) -> int:
    if line.endswith(b"\r\n"):
        return 2
    if line.endswith(b"\n"):
        return 1
    return 0


def _raw_range(stream: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    pos = 0
    while pos < start:
        got = stream.read(min(CHUNK, start - pos))
        if not got:
            return
        pos += len(got)
    while pos < end:
        got = stream.read(min(CHUNK, end - pos))
        if not got:
            return
        pos += len(got)
        yield got


def decoded(stream: BinaryIO, part: Part) -> Iterator[bytes]:
    """The part's body with its transfer encoding undone, in chunks of bounded size."""
    chunks = _raw_range(stream, part.start, part.end)
    if part.encoding == "base64":
        rest = b""
        for chunk in chunks:
            data = rest + _B64_JUNK.sub(b"", chunk)
            cut = len(data) // 4 * 4
            rest = data[cut:]
            if cut:
                yield _b64(data[:cut])
        if rest:
            yield _b64(rest + b"=" * (-len(rest) % 4))
    elif part.encoding == "quoted-printable":
        rest = b""
        for chunk in chunks:
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield binascii.a2b_qp(data[:cut])
            if len(rest) > MAX_LINE:  # no line end: decode up to (not into) an =XX escape
                safe = len(rest)
                tail = rest.rfind(b"=", len(rest) - 2)
                if tail >= 0:
                    safe = tail
                yield binascii.a2b_qp(rest[:safe])
                rest = rest[safe:]
        if rest:
            yield binascii.a2b_qp(rest)
    else:
        yield from chunks


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


def text_of(stream: BinaryIO, part: Part, limit: int = MAX_TEXT_BYTES) -> str:
    """A text part decoded to str (charset label, or guessed), cut at `limit` bytes."""
    out: list[bytes] = []
    size = 0
    for chunk in decoded(stream, part):
        out.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return decode_bytes(b"".join(out)[:limit], part.charset)


def header_text(msg: Message, name: str) -> str:
    values = msg.get_all(name) or []
    return ", ".join(decode_header(str(v)) for v in values)
