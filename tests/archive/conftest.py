"""Fixtures for the archive tests (helpers live in archive_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archive.store import Archive
from fixtures.slapd import slapd  # noqa: F401 - fixture


@pytest.fixture
def state(tmp_path: Path) -> Path:
    (tmp_path / "reports").mkdir()
    return tmp_path


@pytest.fixture
def archive(state: Path) -> Iterator[Archive]:
    a = Archive(state)
    try:
        yield a
    finally:
        a.close()
