"""The streaming multi-line reader: framing, unstuffing and held-back tail."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pop3_harness import MESSAGE, STUFFED, chunked

from proxy.errors import LocalProtocolError
from proxy.pop3.multiline import MultilineReader, stuff


def read_all(chunks: list[bytes]) -> tuple[bytes, bytes, bytes | None]:
    """(wire, data, rest) released for `chunks`; rest is None if the end never came."""
    reader = MultilineReader()
    wire, data = [], []
    for i, chunk in enumerate(chunks):
        out = reader.feed(chunk)
        wire.append(out.wire)
        data.append(out.data)
        if out.done:
            return b"".join(wire), b"".join(data), out.rest + b"".join(chunks[i + 1 :])
    return b"".join(wire), b"".join(data), None


def test_stuff_matches_the_fixture_pair() -> None:
    assert stuff(MESSAGE) == STUFFED


def test_whole_response() -> None:
    wire, data, rest = read_all([STUFFED + b".\r\n+OK next"])
    assert (wire, data, rest) == (STUFFED, MESSAGE, b"+OK next")


def test_empty_response_ends_at_once() -> None:
    assert read_all([b".\r\n"]) == (b"", b"", b"")


def test_every_two_cut_split_and_byte_by_byte_release_the_same() -> None:
    full = STUFFED + b".\r\n"
    for a, b in itertools.combinations(range(1, len(full)), 2):
        assert read_all(chunked(full, [a, b])) == (STUFFED, MESSAGE, b""), (a, b)
    assert read_all([bytes([c]) for c in full]) == (STUFFED, MESSAGE, b"")


@pytest.mark.parametrize(
    ("chunk", "released"),
    [
        (b"abc\r\n.\r", b"abc"),  # could be the end: hold CRLF "." CR
        (b"abc\r\n.", b"abc"),
        (b"abc\r\n", b"abc"),
        (b"abc\r", b"abc"),
        (b"abc\r\n.x", b"abc\r\n.x"),  # a stuffed line: nothing to wait for
        (b".", b""),  # the very first line could be the terminator
    ],
)
def test_only_a_possible_terminator_prefix_is_held(chunk: bytes, released: bytes) -> None:
    out = MultilineReader().feed(chunk)
    assert out.wire == released and not out.done


def test_held_bytes_are_released_when_the_next_chunk_decides() -> None:
    reader = MultilineReader()
    assert reader.feed(b"abc\r\n.\r").wire == b"abc"
    out = reader.feed(b"x\r\n.\r\n")
    assert (out.wire, out.data, out.done) == (b"\r\n.\rx\r\n", b"\r\n\rx\r\n", True)


@pytest.mark.parametrize("body", [b"a\n.\nb\r\n", b"a\r\n.\nb\r\n", b"a\n.\r\nb\r\n", b"a\r.\r\n"])
def test_only_crlf_dot_crlf_ends_the_data(body: bytes) -> None:
    wire, data, rest = read_all([body + b".\r\n"])
    assert rest == b""
    assert wire == body


def test_feeding_after_the_end_is_a_local_error() -> None:
    reader = MultilineReader()
    reader.feed(b".\r\n")
    with pytest.raises(LocalProtocolError):
        reader.feed(b"x")


def test_memory_is_bounded_by_the_chunk() -> None:
    reader = MultilineReader()
    line = b"x" * 1000 + b"\r\n"
    for _ in range(1000):
        out = reader.feed(line)
        assert len(out.wire) in (len(line) - 2, len(line))  # at most the CRLF is held
    assert len(reader._held) <= 4


lines = st.lists(
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    max_size=12,
)


@given(lines=lines, cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=20))
def test_any_message_any_split(lines: list[bytes], cuts: list[int]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    full = stuff(message) + b".\r\nTAIL"
    wire, data, rest = read_all(chunked(full, cuts))
    assert data == message
    assert wire == stuff(message)
    assert rest == b"TAIL"


@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=300), max_size=20))
def test_arbitrary_bytes_frame_consistently(raw: bytes, cuts: list[int]) -> None:
    whole = read_all([raw]) if raw else (b"", b"", None)
    assert read_all(chunked(raw, cuts)) == whole
