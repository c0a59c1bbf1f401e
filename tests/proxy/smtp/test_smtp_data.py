"""DataReader: end-of-data, dot-unstuffing, bare CR/LF refusal, chunking, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from smtp_harness import chunked, stuff

from proxy.smtp.data import TERMINATOR, DataReader


def feed_all(chunks: list[bytes]) -> tuple[DataReader, bytes, bytes, bytes]:
    """Feed chunks until done; (reader, wire, message, rest) with rest = everything after."""
    reader = DataReader()
    wire, message, rest = [], [], b""
    for i, chunk in enumerate(chunks):
        assert not reader.done
        out = reader.feed(chunk)
        wire.append(out.wire)
        message.append(out.message)
        assert len(reader._held) <= 4
        if out.done:
            assert reader.done
            rest = out.rest + b"".join(chunks[i + 1 :])
            break
    return reader, b"".join(wire), b"".join(message), rest


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- SMTP smuggling ------------------------------------------------------------------
# Published end-of-data confusions (SEC Consult 2023, Postfix/Sendmail/Exim advisories):
# a "terminator" the reader must NOT accept, followed by a second, smuggled transaction.
# The value: the bare kinds present (which one is reported first depends on chunking).
SMUGGLING = {
    b"\n.\n": {"LF"},
    b"\n.\r\n": {"LF"},
    b"\r.\r": {"CR"},
    b"\r\n.\r": {"CR"},
    b"\r.\r\n": {"CR"},
    b"\r\n.\n": {"LF"},
    b"\n.\r": {"LF", "CR"},
    b"\r.\n": {"LF", "CR"},
    b"\r\n.\r\r\n": {"CR"},
    b"\r\r\n.\r\r\n": {"CR"},
    b"\n\r\n.\r\n": {"LF"},  # a bare LF just before a real terminator still taints it
}
SMUGGLED = (
    b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    b"From: admin@bank.example\r\nSubject: smuggled\r\n\r\npay now\r\n"
)
HEAD = b"From: a@example.org\r\nTo: b@example.org\r\n\r\nhello"


@pytest.mark.parametrize("fake_end", list(SMUGGLING), ids=repr)
@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_smuggling_payload_flags_bare_newline_and_only_crlf_dot_crlf_ends(
    fake_end: bytes, split: str
) -> None:
    body = HEAD + fake_end + SMUGGLED
    stream = body + b".\r\n" + b"QUIT\r\n"
    chunks = [stream] if split == "whole" else bytewise(stream)
    reader, wire, message, rest = feed_all(chunks)
    assert reader.done
    assert reader.bare_newline in SMUGGLING[fake_end]
    if fake_end.endswith(b"\r\n.\r\n"):  # the last payload ends for real, earlier
        assert rest == SMUGGLED + b".\r\nQUIT\r\n"
    else:
        # The reader did not stop at the fake terminator: everything up to the real one
        # is one message and only the bytes after the real "\r\n.\r\n" are left over.
        assert rest == b"QUIT\r\n"
        assert wire == body
        assert message == body.replace(b"\r\n.", b"\r\n")


def test_clean_message_has_no_bare_newline() -> None:
    reader, wire, message, rest = feed_all([b"a\r\nb\r\n\r\n.\r\n"])
    assert reader.bare_newline is None
    assert (wire, message, rest) == (b"a\r\nb\r\n\r\n", b"a\r\nb\r\n\r\n", b"")


@pytest.mark.parametrize(
    ("stream", "kind"),
    [
        (b"a\nb\r\n.\r\n", "LF"),
        (b"a\rb\r\n.\r\n", "CR"),
        (b"\n\r\n.\r\n", "LF"),  # bare LF as the very first byte
        (b"\r\r\n.\r\n", "CR"),  # bare CR as the very first byte
        (b"abc\r", None),  # a CR at the end of a chunk may still become CRLF
    ],
)
def test_bare_newline_positions(stream: bytes, kind: str | None) -> None:
    for chunks in ([stream], bytewise(stream)):
        reader, *_ = feed_all(chunks)
        assert reader.bare_newline == kind


def test_bare_cr_at_chunk_end_completed_by_next_chunk_is_not_bare() -> None:
    reader = DataReader()
    reader.feed(b"line one\r")
    assert reader.bare_newline is None
    out = reader.feed(b"\nline two\r\n.\r\n")
    assert out.done and reader.bare_newline is None


def test_bare_cr_at_chunk_end_followed_by_other_byte_is_bare() -> None:
    reader = DataReader()
    reader.feed(b"line one\r")
    reader.feed(b"x\r\n.\r\n")
    assert reader.bare_newline == "CR"


def test_bytes_after_terminator_are_not_checked_for_bare_newlines() -> None:
    reader, _, message, rest = feed_all([b"ok\r\n.\r\nNOOP\n\r"])
    assert reader.bare_newline is None
    assert message == b"ok\r\n" and rest == b"NOOP\n\r"


# --- dot-stuffing and message boundaries -----------------------------------------------
@pytest.mark.parametrize(
    ("stuffed", "unstuffed"),
    [
        (b"..x\r\n", b".x\r\n"),  # RFC 5321 4.5.2: a leading dot is removed
        (b".x\r\n", b"x\r\n"),  # even when the sender forgot to double it
        (b"...\r\n", b"..\r\n"),
        (b"..\r\n", b".\r\n"),  # a line holding a single dot
        (b"a\r\n..b\r\n.c\r\nd.\r\n", b"a\r\n.b\r\nc\r\nd.\r\n"),  # only at line start
        (b"x..y\r\n", b"x..y\r\n"),
        (b"\r\n..\r\n", b"\r\n.\r\n"),
    ],
)
def test_dot_unstuffing(stuffed: bytes, unstuffed: bytes) -> None:
    for chunks in ([stuffed + b".\r\n"], bytewise(stuffed + b".\r\n")):
        reader, wire, message, rest = feed_all(chunks)
        assert reader.done and rest == b""
        assert wire == stuffed  # the upstream gets the bytes as sent
        assert message == unstuffed  # the archive gets the message
        assert reader.size == len(unstuffed)


def test_empty_message() -> None:
    reader = DataReader()
    out = reader.feed(b".\r\n")
    assert out.done and out.wire == b"" and out.message == b"" and out.rest == b""
    assert reader.size == 0 and reader.bare_newline is None


def test_empty_message_bytewise_with_rest() -> None:
    reader, wire, message, rest = feed_all(bytewise(b".\r\nQUIT\r\n"))
    assert (wire, message, rest) == (b"", b"", b"QUIT\r\n")


def test_leading_dot_on_first_line() -> None:
    reader, wire, message, _ = feed_all([b"..hidden\r\n.\r\n"])
    assert wire == b"..hidden\r\n" and message == b".hidden\r\n"
    reader, wire, message, _ = feed_all([b"..", b"\r", b"\n.\r\n"])
    assert wire == b"..\r\n" and message == b".\r\n"


def test_a_message_never_ends_without_its_final_crlf() -> None:
    reader = DataReader()
    out = reader.feed(b"no newline.\r\n")  # "." not at the start of a line
    assert not out.done
    out = reader.feed(b"x.\r\n")
    assert not out.done
    out = reader.feed(b"\r\n.\r\n")
    assert out.done
    # The terminator's CRLF belongs to the message: it always ends with CRLF.
    full = DataReader()
    result = full.feed(b"no newline.\r\nx.\r\n\r\n.\r\n")
    assert result.message == b"no newline.\r\nx.\r\n\r\n"


def test_final_dot_line_is_never_in_wire() -> None:
    for stream in (b"a\r\n.\r\n", b".\r\n", b"a\r\n..\r\n.\r\n"):
        for chunks in ([stream], bytewise(stream)):
            _, wire, _, _ = feed_all(chunks)
            assert wire + b".\r\n" == stream


@pytest.mark.parametrize("cut", range(1, len(b"hello\r\n.\r\nQUIT\r\n")))
def test_every_single_cut(cut: int) -> None:
    stream = b"hello\r\n.\r\nQUIT\r\n"
    _, wire, message, rest = feed_all([stream[:cut], stream[cut:]])
    assert (wire, message, rest) == (b"hello\r\n", b"hello\r\n", b"QUIT\r\n")


@pytest.mark.parametrize("cut", range(1, 12))
def test_every_cut_inside_stuffed_dot(cut: int) -> None:
    stream = b"ab\r\n..cd\r\n.\r\n"
    _, wire, message, rest = feed_all([stream[:cut], stream[cut:]])
    assert (wire, message, rest) == (b"ab\r\n..cd\r\n", b"ab\r\n.cd\r\n", b"")


# --- property: any message, any chunking -------------------------------------------
LINE_PIECES = [b".", b"..", b"a", b"Subject: x", b"\xc3\xa9", b" ", b"\t", b"\x00", b"."]
lines = st.lists(st.sampled_from(LINE_PIECES), max_size=6).map(b"".join)
messages = st.lists(lines, max_size=12).map(lambda ls: b"".join(ln + b"\r\n" for ln in ls))


@st.composite
def split_stream(draw: st.DrawFn) -> tuple[bytes, bytes, list[bytes]]:
    message = draw(messages)
    rest = draw(st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n", b".\r\n"]))
    stream = stuff(message) + b".\r\n" + rest
    mode = draw(st.sampled_from(["random", "bytewise", "around-dots"]))
    if mode == "bytewise":
        return message, rest, bytewise(stream)
    if mode == "around-dots":
        # cut right inside every "\r\n." (terminator, "\r\n.." and single-dot lines)
        cuts = []
        i = stream.find(b"\r\n.")
        while i >= 0:
            cuts += [i + 1, i + 2, i + 3, i + 4]
            i = stream.find(b"\r\n.", i + 1)
        cuts += draw(st.lists(st.integers(0, len(stream)), max_size=4))
        return message, rest, chunked(stream, cuts)
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=20))
    return message, rest, chunked(stream, cuts)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(split_stream())
@example((b"\r\n..\r\n", b"", [b"\r", b"\n", b"...", b"\r\n.\r", b"\n"]))
def test_any_message_any_chunking(case: tuple[bytes, bytes, list[bytes]]) -> None:
    message, rest, chunks = case
    stuffed = stuff(message)
    stream = b"".join(chunks)
    reader, wire, got_message, got_rest = feed_all(chunks)
    assert reader.done
    assert reader.bare_newline is None
    assert wire + b".\r\n" == stream[: len(stuffed) + 3]  # up to and with the terminator
    assert wire == stuffed
    assert got_message == message
    assert got_rest == rest
    assert reader.size == len(message)


@settings(max_examples=200)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=10))
def test_arbitrary_bytes_chunking_independent(data: bytes, cuts: list[int]) -> None:
    """Whatever the bytes: chunking never changes what is relayed, kept or left over."""
    whole = feed_all([data])
    split = feed_all(chunked(data, cuts))
    assert whole[0].done == split[0].done
    assert whole[1:] == split[1:]
    assert (whole[0].bare_newline is None) == (split[0].bare_newline is None)
    if whole[0].done:
        end = (b"\r\n" + data).find(TERMINATOR)
        assert whole[1] == data[: max(end, 0)]
        assert whole[3] == data[end + 3 :]


# --- bounded memory --------------------------------------------------------------------
FIFTY_MB = 50 * 1024 * 1024
CHUNK = 65_537  # odd, so chunk edges fall inside CRLF pairs


@pytest.mark.parametrize(
    ("pattern", "total"),
    [(b"\r\n", FIFTY_MB), (b"x", FIFTY_MB), (b"\r\n..", FIFTY_MB // 10), (b"\r", FIFTY_MB // 10)],
)
def test_memory_stays_bounded_for_50_mb(pattern: bytes, total: int) -> None:
    block = pattern * (CHUNK // len(pattern) + 2)
    reader = DataReader()
    fed = 0
    while fed < total:
        start = fed % len(pattern)  # continue the pattern where the last chunk stopped
        chunk = block[start : start + CHUNK - (fed % 7)]
        out = reader.feed(chunk)
        assert not out.done
        assert len(reader._held) <= 4
        fed += len(chunk)
    if pattern == b"\r":
        assert reader.bare_newline == "CR"
    elif pattern != b"x":
        assert reader.bare_newline is None
    assert reader.size >= fed - 6 - fed // 3  # unstuffing removes at most one dot per line
