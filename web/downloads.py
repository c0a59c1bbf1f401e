"""Byte streams for downloads and exports: sync generators of bounded chunks.

The app advances each generator in a worker thread (`trio.to_thread`), one chunk at a
time, so a download's memory is a chunk or two whatever the message size. The original
`.eml` stream checks the SHA-256 as it goes: a small message is checked before the
first byte is sent, a large one after the last, and a mismatch raises, which aborts the
response (the browser sees an incomplete download rather than wrong bytes).
"""

from __future__ import annotations

import re
import time
import urllib.parse
import zipfile
from collections.abc import Iterable, Iterator

from archive.store import Archive

from . import blobs
from .parts import Part, decoded

CHUNK = 64 * 1024


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name (RFC 6266 / RFC 8187)."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", filename).strip("._") or "download"
    if fallback.strip("_") == "":
        fallback = "download" + (filename[filename.rfind(".") :] if "." in filename else "")
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


def eml_chunks(archive: Archive, message_id: int) -> Iterator[bytes]:
    with blobs.open_blob(archive, message_id) as s:
        while True:
            chunk = s.read(CHUNK)
            if not chunk:
                break
            yield chunk
        blobs.verify(s)


def part_chunks(archive: Archive, message_id: int, part: Part) -> Iterator[bytes]:
    with blobs.open_blob(archive, message_id) as s:
        # base64 of a 64 KiB raw chunk decodes to ~48 KiB; chunks pass on as they come
        yield from decoded(s, part)


class _Sink:
    """A write-only, unseekable file for zipfile: bytes written are collected for `take`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._buf += data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def zip_chunks(archive: Archive, ids: Iterable[int]) -> Iterator[bytes]:
    """A zip of `<id>-<sha256 prefix>.eml` files (exact bytes), written as it is sent."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:  # type: ignore[arg-type]
        for mid in ids:
            row = archive.catalog.one("SELECT sha256, date FROM messages WHERE id = ?", (mid,))
            if row is None:
                continue
            info = zipfile.ZipInfo(
                f"{mid}-{row['sha256'][:12]}.eml",
                date_time=time.gmtime(max(row["date"] or 0, 315532800))[:6],
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as entry:
                for chunk in eml_chunks(archive, mid):
                    entry.write(chunk)
                    if len(sink._buf) >= CHUNK:
                        yield sink.take()
            yield sink.take()
    yield sink.take()


_FROM = re.compile(rb"^>*From ")


def mbox_chunks(archive: Archive, ids: Iterable[int]) -> Iterator[bytes]:
    """One mboxrd file: LF line ends, `From ` lines in bodies quoted with `>`."""
    for mid in ids:
        row = archive.catalog.one("SELECT date FROM messages WHERE id = ?", (mid,))
        if row is None:
            continue
        stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(row["date"] or 0))
        out = [f"From MAILER-DAEMON {stamp}\n".encode()]
        size = 0
        rest = b""
        for chunk in eml_chunks(archive, mid):
            data = rest + chunk
            lines = data.split(b"\n")
            rest = lines.pop()
            for line in lines:
                line = line.rstrip(b"\r")
                if _FROM.match(line):
                    line = b">" + line
                out.append(line + b"\n")
                size += len(line) + 1
            if size >= CHUNK:
                yield b"".join(out)
                out, size = [], 0
        if rest:
            rest = rest.rstrip(b"\r")
            out.append((b">" + rest if _FROM.match(rest) else rest) + b"\n")
        out.append(b"\n")
        yield b"".join(out)
