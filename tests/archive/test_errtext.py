"""The one exception-to-text helper (CLI error line, logs, alerts, status, web admin)."""

from __future__ import annotations

import errno

from archive.errtext import describe


def test_os_errors_name_the_files_and_the_reason() -> None:
    e = OSError(errno.ENOENT, "No such file or directory", "/a", None, "/b")
    assert describe(e) == "/a -> /b: No such file or directory"
    assert describe(PermissionError(errno.EACCES, "Permission denied", "/x")) == (
        "/x: Permission denied"
    )
    assert describe(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == (
        "Connection refused"
    )
    assert describe(TimeoutError("timed out")) == "timed out"


def test_other_errors_give_their_message_or_their_class() -> None:
    assert describe(ValueError("bad value")) == "bad value"
    assert describe(KeyError()) == "KeyError"


def test_limit_keeps_the_first_line_cut_short() -> None:
    e = RuntimeError("first line\nsecond line with more")
    assert describe(e) == "first line\nsecond line with more"  # the CLI edge flattens it
    assert describe(e, limit=200) == "first line"
    assert describe(RuntimeError("x" * 300), limit=200) == "x" * 200
    assert describe(RuntimeError(), limit=200) == "RuntimeError"
