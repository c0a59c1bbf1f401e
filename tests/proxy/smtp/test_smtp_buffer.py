"""LineBuffer: exact lines, TOO_LONG once then resync at the next LF, linear feeding."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from smtp_harness import chunked

from proxy.buffer import TOO_LONG, LineBuffer


def lines_of(buf: LineBuffer) -> list[object]:
    out: list[object] = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


def test_lines_keep_their_terminators() -> None:
    buf = LineBuffer(100)
    buf.feed(b"EHLO a\r\nNOOP\nRSET\r\npart")
    assert lines_of(buf) == [b"EHLO a\r\n", b"NOOP\n", b"RSET\r\n"]
    assert len(buf) == 4
    buf.feed(b"ial\r\n")
    assert lines_of(buf) == [b"partial\r\n"]
    assert len(buf) == 0


def test_limit_counts_the_terminator() -> None:
    buf = LineBuffer(10)
    buf.feed(b"12345678\r\n" + b"123456789\r\n" + b"ok\r\n")
    assert lines_of(buf) == [b"12345678\r\n", TOO_LONG, b"ok\r\n"]


def test_long_line_reported_once_then_resync_at_next_lf() -> None:
    buf = LineBuffer(16)
    buf.feed(b"x" * 100)
    assert lines_of(buf) == [TOO_LONG]
    assert len(buf) == 0  # never accumulated
    buf.feed(b"y" * 100)
    assert lines_of(buf) == []  # still the same line: no second TOO_LONG
    buf.feed(b"zz\r\nNOOP\r\n")
    assert lines_of(buf) == [b"NOOP\r\n"]
    buf.feed(b"a" * 17 + b"\r\nQUIT\r\n")  # a complete overlong line
    assert lines_of(buf) == [TOO_LONG, b"QUIT\r\n"]


def test_long_line_bytewise_reports_once() -> None:
    buf = LineBuffer(16)
    got: list[object] = []
    for b in b"x" * 200 + b"\r\nNOOP\r\n":
        buf.feed(bytes([b]))
        got += lines_of(buf)
        assert len(buf) <= 17
    assert got == [TOO_LONG, b"NOOP\r\n"]


def test_complete_line_then_overlong_partial() -> None:
    buf = LineBuffer(16)
    buf.feed(b"NOOP\r\n" + b"x" * 40)
    assert lines_of(buf) == [b"NOOP\r\n", TOO_LONG]


def test_take_returns_raw_bytes_and_empties() -> None:
    buf = LineBuffer(16)
    buf.feed(b"DATA\r\nbody\rstill")
    assert buf.next_line() == b"DATA\r\n"
    assert buf.take() == b"body\rstill"
    assert len(buf) == 0 and buf.next_line() is None


def test_feeding_a_100k_line_bytewise_is_linear() -> None:
    # Under the limit: the search offset keeps each feed O(chunk), not O(buffer).
    buf = LineBuffer(200_000)
    data = b"x" * 100_000
    start = time.perf_counter()
    for i in range(len(data)):
        buf.feed(data[i : i + 1])
        assert buf.next_line() is None
    buf.feed(b"\r\n")
    assert buf.next_line() == data + b"\r\n"
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed


def test_discarding_a_100k_line_bytewise_is_linear_and_bounded() -> None:
    buf = LineBuffer(2048)
    got: list[object] = []
    start = time.perf_counter()
    for _ in range(100_000):
        buf.feed(b"x")
        got += lines_of(buf)
        assert len(buf) <= 2049
    buf.feed(b"\r\nNOOP\r\n")
    got += lines_of(buf)
    assert got == [TOO_LONG, b"NOOP\r\n"]
    assert time.perf_counter() - start < 2.0


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    st.lists(st.integers(0, 400), max_size=15),
)
def test_chunking_never_changes_the_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(ln + b"\n" for ln in lines)
    expected = [ln + b"\n" if len(ln) + 1 <= 20 else TOO_LONG for ln in lines]
    buf = LineBuffer(20)
    got: list[object] = []
    for chunk in chunked(data, cuts):
        buf.feed(chunk)
        got += lines_of(buf)
    assert got == expected
