"""The web side reads one Archive from many worker threads at once: every read must come
back intact (regression: a shared zstd decompressor corrupted concurrent reads)."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from archive.store import Archive
from web import blobs


def _mail(i: int) -> bytes:
    rng = random.Random(i)
    body = rng.randbytes(6000).hex()  # ~12 KB each: hundreds span several 1 MiB chunks
    return (
        f"From: a{i}@example.org\r\nTo: b@example.org\r\nSubject: m{i}\r\n"
        f"Message-ID: <m{i}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


def test_threads_reading_one_archive_get_exact_bytes(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    maildir.mkdir()
    for i in range(300):
        (maildir / f"{i}.eml").write_bytes(_mail(i))
    with Archive(tmp_path / "state") as archive:
        archive.import_path(maildir)
        rows = archive.catalog.query("SELECT id, sha256 FROM messages")
        expected = {r["id"]: r["sha256"] for r in rows}
        chunks = archive.catalog.query("SELECT DISTINCT pack, offset FROM messages")
        assert len(chunks) > 2
        ids = random.Random(1).choices(list(expected), k=2000)

        def read(mid: int) -> bool:
            raw = archive.get_raw(mid)
            with blobs.open_blob(archive, mid) as s:
                same = s.read() == raw
            return same and hashlib.sha256(raw).hexdigest() == expected[mid]

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(read, ids))
