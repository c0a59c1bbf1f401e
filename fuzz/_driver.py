"""The command line shared by the fuzz targets (fuzz/smtp_core.py, fuzz/pop3_core.py).

With atheris installed, the target runs under libFuzzer (coverage-guided; `-runs=N`,
corpus directories, the usual libFuzzer flags). Without it, or with `--random`, inputs
are spliced at random from protocol tokens and random bytes: the same `-runs=N` /
`-seed=N` (or positional `N [SEED]`) select how many and which.
"""

from __future__ import annotations

import importlib
import random
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: the targets instrument proxy/ for atheris first
    from proxy.dotstuff import DotReader

DEFAULT_RUNS = 1_000_000


def load_atheris(modules: Sequence[str]) -> ModuleType | None:
    """atheris with `modules` imported under its coverage instrumentation (unless
    `--random`), or None where it is not installed (the random driver needs nothing)."""
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        return None
    if "--random" not in sys.argv:
        with atheris.instrument_imports(include=["proxy"]):
            for name in modules:
                importlib.import_module(name)
    return atheris


def token_input(rng: random.Random, pools: Sequence[Sequence[bytes]]) -> bytes:
    """A random input in the targets' encoding: a 4-byte header, then operations that
    either carry 5 raw bytes or a length-prefixed chunk spliced from protocol tokens."""
    out = bytearray(rng.randbytes(4))
    for _ in range(rng.randrange(1, 16)):
        op = rng.randrange(256)
        out.append(op)
        if (op >> 4) & 1:
            out += bytes(rng.randrange(256) for _ in range(5))
        else:
            n = rng.randrange(48)
            out.append(n)
            pool = rng.choice(pools)
            raw = b"".join(rng.choice(pool) for _ in range(3)) if rng.random() < 0.6 else b""
            raw += rng.randbytes(n)
            out += raw[:n]
    return bytes(out)


def random_main(
    one_input: Callable[[bytes], None],
    make_input: Callable[[random.Random], bytes],
    runs: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    start = time.monotonic()
    for i in range(1, runs + 1):
        data = make_input(rng)
        try:
            one_input(data)
        except Exception:
            print(f"FAILED at run {i}, seed {seed}; input: {data!r}", file=sys.stderr)
            raise
        if i % 100_000 == 0:
            rate = i / (time.monotonic() - start)
            print(f"#{i} runs, {rate:.0f}/s", flush=True)
    print(f"done: {runs} runs in {time.monotonic() - start:.0f}s, no failure", flush=True)


def main(
    one_input: Callable[[bytes], None],
    make_input: Callable[[random.Random], bytes],
    atheris: ModuleType | None,
) -> None:
    if atheris is None or "--random" in sys.argv:
        runs, seed = DEFAULT_RUNS, int(time.time())
        numbers = [a for a in sys.argv[1:] if a.isdigit()]
        for arg in sys.argv[1:]:
            if arg.startswith("-runs="):
                runs = int(arg.split("=", 1)[1])
            elif arg.startswith("-seed="):
                seed = int(arg.split("=", 1)[1])
        if numbers:
            runs = int(numbers[0])
        if len(numbers) > 1:
            seed = int(numbers[1])
        random_main(one_input, make_input, runs, seed)
        return
    argv = list(sys.argv)
    if not any(a.startswith("-runs=") for a in argv):
        argv.append(f"-runs={DEFAULT_RUNS}")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


class Input:
    """A cursor over the fuzz input; reads past the end yield zeros."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def more(self) -> bool:
        return self.pos < len(self.data)


def decode_events(
    inp: Input,
    kinds: Sequence[str],
    signals: Sequence[str],
    client_tokens: Sequence[bytes],
    upstream_tokens: Sequence[bytes],
    max_events: int,
    events: list[tuple[str, bytes]],
) -> list[tuple[str, bytes]]:
    """Append events decoded from the rest of `inp`: a signal, or bytes for a side that
    are either spliced protocol tokens or raw input bytes."""
    while inp.more and len(events) < max_events:
        op = inp.byte()
        kind = kinds[op % len(kinds)]
        if kind in signals:
            events.append((kind, b""))
            continue
        if (op >> 4) & 1:
            pool = client_tokens if (op >> 5) & 1 else upstream_tokens
            n = inp.byte() % 4 + 1
            payload = b"".join(pool[inp.byte() % len(pool)] for _ in range(n))
        else:
            payload = inp.take(inp.byte() % 48)
        events.append((kind, payload))
    return events


def decode_input(
    data: bytes,
    make_settings: Callable[[int], dict[str, object]],
    kinds: Sequence[str],
    signals: Sequence[str],
    client_tokens: Sequence[bytes],
    upstream_tokens: Sequence[bytes],
    prefixes: Sequence[Sequence[tuple[str, bytes]]],
    max_events: int,
) -> tuple[dict[str, object], list[tuple[str, bytes]], list[bool], list[bool], bool]:
    """An input as both targets read it: a settings byte (`make_settings` maps it; its
    top bit feeds the events byte by byte), archive and TLS verdict bits, a prefix (a
    session already some way in), then events."""
    inp = Input(data)
    s, verdicts, tls = inp.byte(), inp.byte(), inp.byte()
    settings = make_settings(s)
    bytewise = bool(s >> 7)
    prefix = list(prefixes[inp.byte() % len(prefixes)])
    events = decode_events(inp, kinds, signals, client_tokens, upstream_tokens, max_events, prefix)
    return (
        settings,
        events,
        [bool(verdicts >> i & 1) for i in range(8)],
        [bool(tls >> i & 1) for i in range(8)],
        bytewise,
    )


def _feed(reader: DotReader, chunks: list[bytes]) -> tuple[bytes, bytes, bool, bytes]:
    wire, message, rest, done = [], [], b"", False
    for i, chunk in enumerate(chunks):
        out = reader.feed(chunk)
        assert len(reader._held) <= 4
        wire.append(out.wire)
        message.append(out.data)
        if out.done:
            done, rest = True, out.rest + b"".join(chunks[i + 1 :])
            break
    return b"".join(wire), b"".join(message), done, rest


def check_dot_reader(data: bytes, make_reader: Callable[[], DotReader]) -> None:
    """Feed `data` to a reader whole and in chunks: the same result, and the reference
    parse (the end is the first CRLF "." CRLF; the copy is the unstuffed wire bytes;
    a reader that refuses bare CR/LF says so exactly when there is one)."""
    from proxy.dotstuff import TERMINATOR

    whole = make_reader()
    w = _feed(whole, [data])
    cuts = sorted({b % (len(data) + 1) for b in data[:12]})
    edges = [0, *cuts, len(data)]
    split = make_reader()
    s = _feed(split, [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a])
    assert w == s, (data, cuts)
    assert (whole.bare_newline is None) == (split.bare_newline is None)
    wire, message, done, rest = w
    end = (b"\r\n" + data).find(TERMINATOR)
    assert done == (end >= 0)
    if done:
        assert wire == data[: max(end, 0)] and rest == data[end + 3 :]
        assert message == (b"\r\n" + wire).replace(b"\r\n.", b"\r\n")[2:]
        assert whole.size == len(message)
        if whole._check_bare:
            crlf = wire.count(b"\r\n")
            bare = wire.count(b"\n") != crlf or wire.count(b"\r") != crlf
            assert bare == (whole.bare_newline is not None), data
