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

from _driver import check_dot_reader, decode_input, load_atheris, main, token_input  # noqa: E402 - fuzz/ is the script's folder

atheris = load_atheris(
    ["proxy.buffer", "proxy.smtp.data", "proxy.smtp.ehlo", "proxy.smtp.relay", "proxy.smtp.replies"]
)

from smtp_harness import CLIENT_TOKENS, SIGNALS, UPSTREAM_TOKENS, run_events  # noqa: E402

from proxy.smtp.data import DataReader  # noqa: E402

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


def settings_of(s: int) -> dict[str, object]:
    return {
        "client_tls": ["none", "starttls", "implicit"][s % 3],
        "target_tls": ["none", "starttls"][(s >> 2) & 1],
        "target_user": [None, "bob"][(s >> 3) & 1],
        "target_password": "pw",
        "on_archive_failure": ["reject", "pass"][(s >> 4) & 1],
        "max_line_length": [2048, 32][(s >> 5) & 1],
        "max_message_size": [10_000, 20][(s >> 6) & 1],
        "max_commands": [100, 5][(s >> 6) & 1],
    }


def one_input(data: bytes) -> None:
    settings, events, verdicts, tls, bytewise = decode_input(
        data, settings_of, KINDS, SIGNALS, CLIENT_TOKENS, UPSTREAM_TOKENS, PREFIXES, MAX_EVENTS
    )
    run_events(settings, events, verdicts, tls, bytewise=bytewise, check_each=False)
    check_dot_reader(data, DataReader)


def random_input(rng: random.Random) -> bytes:
    return token_input(rng, (CLIENT_TOKENS, UPSTREAM_TOKENS))


if __name__ == "__main__":
    main(one_input, random_input, atheris)
