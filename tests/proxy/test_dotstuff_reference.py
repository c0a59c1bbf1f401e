"""The one-pass DotReader against the straightforward reader it replaced (find, then
replace): for any input and any split, the same wire, data, end and rest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dotstuff import _CRLF, _STUFFED, TERMINATOR, DotReader, _held_suffix


class ReferenceReader:
    """The reader of session 3 (two scans and a replace per chunk), kept as the oracle."""

    def __init__(self) -> None:
        self._held = _CRLF
        self._synthetic = len(_CRLF)
        self.done = False

    def feed(self, chunk: bytes) -> tuple[bytes, bytes, bool, bytes]:
        buf = self._held + chunk
        end = buf.find(TERMINATOR)
        if end >= 0:
            region, rest = buf[: end + len(_CRLF)], buf[end + len(TERMINATOR) :]
            self._held = b""
            self.done = True
        else:
            keep = _held_suffix(buf)
            region, rest = buf[: len(buf) - keep], b""
            self._held = buf[len(buf) - keep :]
        data = region.replace(_STUFFED, _CRLF)
        if self._synthetic and region:
            cut = min(self._synthetic, len(region))
            region, data = region[cut:], data[cut:]
            self._synthetic -= cut
        return region, data, self.done, rest


def run(reader, chunks: list[bytes]) -> list[tuple[bytes, bytes, bool, bytes]]:
    out = []
    for c in chunks:
        if reader.done:
            break
        got = reader.feed(c)
        out.append(got if isinstance(got, tuple) else (got.wire, got.data, got.done, got.rest))
    return out


# inputs rich in the bytes that matter: dots, CR, LF, at line starts and chunk edges
alphabet = st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"..", b"x", b"\r\n.\r\n"])
data_st = st.lists(alphabet, max_size=60).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(data=data_st, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_one_pass_reader_equals_the_reference(data: bytes, cuts: list[int]) -> None:
    edges = sorted({min(c, len(data)) for c in cuts})
    chunks, last = [], 0
    for e in edges:
        chunks.append(data[last:e])
        last = e
    chunks.append(data[last:])
    assert run(DotReader(), chunks) == run(ReferenceReader(), chunks)


def test_a_long_body_with_many_dot_lines() -> None:
    lines = [(b"." if i % 3 == 0 else b"") + b"line %d" % i for i in range(2000)]
    body = b"\r\n".join(lines) + b"\r\n"
    wire = (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\nQUIT\r\n"
    for size in (1, 7, 64, 4096, len(wire)):
        chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
        new, ref = run(DotReader(), chunks), run(ReferenceReader(), chunks)
        assert new == ref
        assert b"".join(d for _, d, _, _ in new) == body
        assert new[-1][2] is True
    assert new[-1][3] == b"QUIT\r\n"  # one chunk: what follows the end is returned
