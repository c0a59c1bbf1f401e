"""archive.durable: atomic replacement keeps content whole and the owner of the old file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from archive.durable import write_atomic


def test_write_atomic_replaces_content_with_the_requested_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secrets.toml"
    write_atomic(target, b"one", 0o600)
    write_atomic(target, b"two", 0o600)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secrets.toml"]  # no temp left


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_write_atomic_keeps_the_owner_of_the_replaced_file(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_bytes(b"old")
    os.chown(target, 65534, 65534)  # e.g. the service user
    write_atomic(target, b"new", 0o644)
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert target.read_bytes() == b"new"
