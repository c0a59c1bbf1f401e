"""Fuzz the sans-IO SMTP core: random bytes through SmtpRelay and DataReader.

Not a test (CI runs tests/proxy/smtp); this is for `make fuzz`:

    .venv/bin/python fuzz/smtp_core.py                      # atheris, 1,000,000 runs
    .venv/bin/python fuzz/smtp_core.py -runs=5000000 -jobs=2 -workers=2 corpus/
    .venv/bin/python fuzz/smtp_core.py --random 1000000     # no atheris: random inputs

Each input is decoded into relay settings, archive/TLS verdicts and a list of events
(client bytes, upstream bytes, "whatever the core reads next", lost connections,
timeouts); bytes are either raw or spliced from SMTP tokens so the fuzzer reaches
DATA, AUTH and STARTTLS states quickly. After every event the invariants of
tests/proxy/smtp/smtp_harness.py:check_invariants must hold (archive before the final
dot, no end-of-data or bare CR/LF relayed inside a message, the copy is the unstuffed
wire bytes, nothing after Close, never waiting for a lost provider), and no exception
may escape the core. The same input is also fed to a DataReader whole and in chunks:
the results must not depend on chunking and must match a reference parse.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests" / "proxy" / "smtp")]

from _driver import Input, decode_events, main, token_input  # noqa: E402 - fuzz/ is the script's folder

try:
    import atheris
except ImportError:  # the random driver below needs nothing but the standard library
    atheris = None

if atheris is not None and "--random" not in sys.argv:
    with atheris.instrument_imports(include=["proxy"]):
        import proxy.buffer  # noqa: F401
        import proxy.smtp.data
        import proxy.smtp.ehlo
        import proxy.smtp.relay
        import proxy.smtp.replies  # noqa: F401

from smtp_harness import CLIENT_TOKENS, SIGNALS, UPSTREAM_TOKENS, run_events  # noqa: E402

from proxy.smtp.data import TERMINATOR, DataReader  # noqa: E402

KINDS = ["client", "upstream", "next", "next", "next", *SIGNALS]
PREFIXES = [
    [],
    [("upstream", b"220 hi\r\n"), ("next", b"EHLO a\r\n"), ("next", b"250 ok\r\n")],
    [
        ("upstream", b"220 hi\r\n"),
        ("next", b"EHLO a\r\n"),
        ("next", b"250 ok\r\n"),
        ("next", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
        ("next", b"250 ok\r\n250 ok\r\n354 go\r\n"),
    ],
]
MAX_EVENTS = 40


def decode(data: bytes) -> tuple[dict[str, object], list, list[bool], list[bool], bool]:
    inp = Input(data)
    s, verdicts, tls = inp.byte(), inp.byte(), inp.byte()
    settings: dict[str, object] = {
        "client_tls": ["none", "starttls", "implicit"][s % 3],
        "target_tls": ["none", "starttls"][(s >> 2) & 1],
        "target_user": [None, "bob"][(s >> 3) & 1],
        "target_password": "pw",
        "on_archive_failure": ["reject", "pass"][(s >> 4) & 1],
        "max_line_length": [2048, 32][(s >> 5) & 1],
        "max_message_size": [10_000, 20][(s >> 6) & 1],
        "max_commands": [100, 5][(s >> 6) & 1],
    }
    bytewise = bool(s >> 7)
    events = decode_events(
        inp,
        KINDS,
        SIGNALS,
        CLIENT_TOKENS,
        UPSTREAM_TOKENS,
        MAX_EVENTS,
        list(PREFIXES[inp.byte() % 3]),
    )
    return (
        settings,
        events,
        [bool(verdicts >> i & 1) for i in range(8)],
        [bool(tls >> i & 1) for i in range(8)],
        bytewise,
    )


def feed(reader: DataReader, chunks: list[bytes]) -> tuple[bytes, bytes, bool, bytes]:
    wire, message, rest, done = [], [], b"", False
    for i, chunk in enumerate(chunks):
        out = reader.feed(chunk)
        assert len(reader._held) <= 4
        wire.append(out.wire)
        message.append(out.message)
        if out.done:
            done, rest = True, out.rest + b"".join(chunks[i + 1 :])
            break
    return b"".join(wire), b"".join(message), done, rest


def check_data_reader(data: bytes) -> None:
    whole = DataReader()
    w = feed(whole, [data])
    cuts = sorted({b % (len(data) + 1) for b in data[:12]})
    edges = [0, *cuts, len(data)]
    split = DataReader()
    s = feed(split, [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a])
    assert w == s, (data, cuts)
    assert (whole.bare_newline is None) == (split.bare_newline is None)
    wire, message, done, rest = w
    end = (b"\r\n" + data).find(TERMINATOR)
    assert done == (end >= 0)
    if done:
        assert wire == data[: max(end, 0)] and rest == data[end + 3 :]
        assert message == (b"\r\n" + wire).replace(b"\r\n.", b"\r\n")[2:]
        assert whole.size == len(message)
        bare = wire.count(b"\n") != wire.count(b"\r\n") or wire.count(b"\r") != wire.count(b"\r\n")
        assert bare == (whole.bare_newline is not None), data


def one_input(data: bytes) -> None:
    settings, events, verdicts, tls, bytewise = decode(data)
    run_events(settings, events, verdicts, tls, bytewise=bytewise, check_each=False)
    check_data_reader(data)


def random_input(rng: random.Random) -> bytes:
    return token_input(rng, (CLIENT_TOKENS, UPSTREAM_TOKENS))


if __name__ == "__main__":
    main(one_input, random_input, atheris)
