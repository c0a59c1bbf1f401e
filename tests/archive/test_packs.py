"""Packs: exact round trip, tamper detection, uncommitted tails cut on reopen."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from archive import packs
from archive.packs import FILE_MAGIC, PackError, PackReader, PackWriter, pack_name


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_round_trip_chunks_and_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packs, "CHUNK_BYTES", 20_000)
    w = PackWriter(tmp_path, {})
    blobs = [os.urandom(100), b"hello\r\n" * 1000, b"", os.urandom(30_000), b"tail"]
    refs = [w.append(b, _sha(b)) for b in blobs]
    w.sync()
    # blobs 0-3 fill the first chunk (>= 20,000 bytes), blob 4 is in a second one
    assert len({(r.offset, r.length) for r in refs[:4]}) == 1
    assert refs[4].offset == refs[0].offset + refs[0].length
    w.close()
    r = PackReader(tmp_path)
    assert [r.read(ref, _sha(b)) for ref, b in zip(refs, blobs, strict=True)] == blobs
    scanned = list(r.scan(1))
    assert [sha for _, sha in scanned] == [_sha(b) for b in blobs]
    assert [ref for ref, _ in scanned] == refs


def test_tampering_is_detected(tmp_path: Path) -> None:
    w = PackWriter(tmp_path, {})
    ref = w.append(b"x" * 5000, _sha(b"x" * 5000))
    w.close()
    with pytest.raises(PackError, match="SHA-256"):
        PackReader(tmp_path).read(ref, _sha(b"y"))
    path = tmp_path / pack_name(1)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PackError):
        PackReader(tmp_path).read(ref, _sha(b"x" * 5000))


def test_uncommitted_tail_is_cut(tmp_path: Path) -> None:
    w = PackWriter(tmp_path, {})
    a = w.append(b"committed", _sha(b"committed"))
    w.sync()
    w.append(b"never committed", _sha(b"never committed"))
    w.close()
    w = PackWriter(tmp_path, {1: a.offset + a.length})  # the catalog knows only `a`
    b = w.append(b"second", _sha(b"second"))
    w.close()
    assert b.offset == a.offset + a.length
    assert [sha for _, sha in PackReader(tmp_path).scan(1)] == [_sha(b"committed"), _sha(b"second")]
    # a pack the catalog knows nothing about is cut to its header
    w = PackWriter(tmp_path, {})
    w.close()
    assert (tmp_path / pack_name(1)).stat().st_size == len(FILE_MAGIC)
