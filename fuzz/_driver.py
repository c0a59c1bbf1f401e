"""The command line shared by the fuzz targets (fuzz/smtp_core.py, fuzz/pop3_core.py).

With atheris installed, the target runs under libFuzzer (coverage-guided; `-runs=N`,
corpus directories, the usual libFuzzer flags). Without it, or with `--random`, inputs
are spliced at random from protocol tokens and random bytes: the same `-runs=N` /
`-seed=N` (or positional `N [SEED]`) select how many and which.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType

DEFAULT_RUNS = 1_000_000


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
