"""TopWatch: is a TOP response the whole message? Any chunking gives the same answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.pop3.top import TopWatch


def watch(data: bytes, lines: int | None, size: int | None, cuts: list[int] = ()) -> TopWatch:  # type: ignore[assignment]
    w = TopWatch(lines, size)
    points = sorted({c for c in cuts if 0 < c < len(data)})
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        w.feed(data[a:b])
    return w


MSG = b"Subject: x\r\nX: y\r\n\r\nline 1\r\n\r\nline 3\r\n"


def test_body_lines_and_decision() -> None:
    assert watch(MSG, 3, None).body_lines == 3
    assert watch(MSG, 4, None).whole()  # fewer lines than asked: the body ended
    assert not watch(MSG, 3, 10_000).whole()  # exactly L lines, short of the LIST size
    assert watch(MSG, 3, len(MSG)).whole()  # exactly L lines, and the size is reached
    assert not watch(MSG, 3, None).whole()  # no size known: cannot call it whole
    assert watch(MSG, None, None).whole()  # unparsable count: never under-archive


def test_header_only_and_body_only_messages() -> None:
    assert watch(b"Subject: x\r\n", 1, None).whole()  # no body at all
    assert not watch(b"Subject: x\r\n", 0, 999).whole()
    assert watch(b"\r\nbody\r\n", 5, None).body_lines == 1  # no headers


@given(
    body=st.lists(st.sampled_from([b"", b"a", b"\r", b".."]), max_size=12),
    cuts=st.lists(st.integers(0, 80), max_size=10),
)
def test_any_chunking_counts_the_same(body: list[bytes], cuts: list[int]) -> None:
    data = b"H: 1\r\n\r\n" + b"".join(line + b"\r\n" for line in body)
    w = watch(data, 1000, None, cuts)
    assert (w.body_lines, w.size) == (len(body), len(data))
