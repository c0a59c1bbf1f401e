"""MessageWriter.sha256: every byte written, however the message was chunked or spilled.

The hash of a message kept in memory is taken in one call when asked for (the document
at commit), not per chunk; a message that spills to its temp file is hashed as it goes.
Either way the digest must equal that of the bytes written, also when asked for midway.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import archive.spool as spool_mod
from archive.spool import Spool

CHUNKS = st.lists(st.binary(max_size=700), max_size=12)


@settings(max_examples=300, deadline=None)
@given(chunks=CHUNKS, spill=st.sampled_from([64, 1000, 1 << 20]), ask=st.integers(0, 12))
def test_the_digest_covers_every_byte_written(chunks, spill, ask) -> None:
    saved = spool_mod.SPILL_BYTES
    spool_mod.SPILL_BYTES = spill  # small: the message spills to its temp file midway
    try:
        with tempfile.TemporaryDirectory() as d:
            writer = Spool(Path(d)).open_message("pop3", {})
            for i, c in enumerate(chunks):
                if i == ask:  # asked midway: cached, and the next write must drop it
                    assert writer.sha256 == hashlib.sha256(b"".join(chunks[:i])).hexdigest()
                writer.write(c)
            assert writer.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
            assert writer.sha256 == writer.document("pending", None)["sha256"]
            writer.write(b"")  # drops the cached digest: the next one is taken after abort
            writer.abort()
            assert writer.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    finally:
        spool_mod.SPILL_BYTES = saved


def test_bytes_after_a_failed_spill_still_count(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spool_mod, "SPILL_BYTES", 10)
    writer = Spool(tmp_path).open_message("pop3", {})

    def no_room(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "open", no_room)  # the temp file cannot be created
    writer.write(b"0123456789abcdef")
    writer.write(b"after the error")
    monkeypatch.undo()
    assert writer.error is not None and "No space left" in writer.error
    assert writer.sha256 == hashlib.sha256(b"0123456789abcdefafter the error").hexdigest()
    writer.abort()
