"""A full report directory (a real tmpfs, mounted by the test): fail closed, then recover.

DESIGN invariant 2: with `on_archive_failure = "reject"` the client gets `451 4.3.0`, the
provider never sees the end of the message, and no partial file is left behind. When
space returns the very next message goes through, with no restart and no operator.
Needs root (mount); skipped otherwise, and the existing permission-based tests in
tests/e2e/test_smtp_security.py cover the same code path without root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import mails
from fixtures.smtp_clients import smtplib_session

pytestmark = pytest.mark.e2e

TMPFS_SIZE = "256k"


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0750", "tmpfs", str(path)],
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write until ENOSPC; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_disk_full_fails_closed_and_recovers(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    with tmpfs(proxy.reports_dir):
        filler = fill(proxy.reports_dir)
        mail = mails.plain()
        res = await smtplib_session(proxy.port(), [mail])
        code, text = res.transactions[0].data
        assert code == 451 and text.startswith(b"4.3.0"), res
        assert up.transactions == []  # the final dot never went upstream
        assert [p.name for p in proxy.report_files()] == ["filler"]  # no partial file

        filler.unlink()  # space returns
        res = await smtplib_session(proxy.port(), [mail])
        assert res.transactions[0].data[0] == 250, res
        (rep,) = await proxy.wait_reports(1)
        assert rep.eml == mail.data
        assert rep["upstream"]["outcome"] == "delivered"
        assert [t.content for t in up.messages] == [mail.data]


async def test_disk_full_mid_message_fails_closed(smtp_upstream, make_proxy):
    """The disk fills while a large message streams (the temp file already exists)."""
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    with tmpfs(proxy.reports_dir):
        big = mails.multipart([("big.bin", "application/octet-stream", os.urandom(600_000))])
        assert len(big.data) > 512 * 1024  # larger than the whole file system
        res = await smtplib_session(proxy.port(), [big])
        code, text = res.transactions[0].data
        assert code == 451 and text.startswith(b"4.3.0"), res
        assert up.transactions == []
        assert proxy.report_files() == []
        small = mails.plain()
        res = await smtplib_session(proxy.port(), [small])
        assert res.transactions[0].data[0] == 250, res
        (rep,) = await proxy.wait_reports(1)
        assert rep.eml == small.data
