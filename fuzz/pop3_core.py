"""Fuzz the sans-IO POP3 core: random bytes through Pop3Relay and MultilineReader.

Not a test (CI runs tests/proxy/pop3); this is for `make fuzz`:

    .venv/bin/python fuzz/pop3_core.py                      # atheris, 1,000,000 runs
    .venv/bin/python fuzz/pop3_core.py -runs=5000000 -jobs=2 -workers=2 corpus/
    .venv/bin/python fuzz/pop3_core.py --random 1000000     # no atheris: random inputs

Each input is decoded into relay settings, archive/TLS verdicts and a list of events
(client bytes, upstream bytes, "whatever the core reads next", lost connections,
timeouts); bytes are either raw or spliced from POP3 tokens so the fuzzer reaches
RETR, AUTH and STLS states quickly. tests/proxy/pop3/pop3_harness.py has no invariant
checker, so `check_invariants` below is this file's own (DESIGN invariants 1 and 3):

- reading is None exactly when the core emitted Close; Close at most once; no bytes,
  StartTls or BeginMessage after Close; once the provider is gone (lost, timed out,
  EOF, CloseUpstream) the core never waits for it;
- for every RETR copy: the bytes sent to the client after BeginMessage never contain
  the end of the multi-line response (CRLF "." CRLF, counting the status line's CRLF),
  the copy is exactly their unstuffing, and nothing goes upstream while a message
  streams or waits for its verdict;
- after CommitMessage nothing reaches the client until the driver answered; then the
  first bytes are exactly ".\\r\\n" -- only if the copy is durable or in pass mode; a
  failed copy in reject mode ends the session without another byte to the client;
- an aborted copy (AbortMessage) is followed by Close, never by the final dot;
- with target_tls=starttls nothing but the proxy's own "STLS" goes upstream before TLS;
- no exception escapes the core.

The same input is also fed to a MultilineReader whole and in chunks: the results must
not depend on chunking and must match a reference parse.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests" / "proxy" / "pop3")]

from _driver import check_dot_reader, decode_input, load_atheris, main, token_input  # noqa: E402 - fuzz/ is the script's folder

atheris = load_atheris(
    [
        "proxy.buffer",
        "proxy.pop3.capa",
        "proxy.pop3.commands",
        "proxy.pop3.multiline",
        "proxy.pop3.relay",
        "proxy.pop3.sasl",
    ]
)

from proxy.actions import (  # noqa: E402
    AbortMessage,
    BeginMessage,
    Close,
    CloseUpstream,
    CommitMessage,
    MessageData,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)
from proxy.dotstuff import TERMINATOR  # noqa: E402
from proxy.pop3 import Pop3Relay  # noqa: E402
from proxy.pop3.multiline import MultilineReader  # noqa: E402
from proxy.replay import FRAMING_TOKENS, ArchiveAnswer, Replayer, apply_event  # noqa: E402
from proxy.replay import SIGNALS as REPLAY_SIGNALS  # noqa: E402
from proxy.settings import RelaySettings  # noqa: E402

CLIENT_TOKENS = [
    b"USER alice\r\n",
    b"PASS secret\r\n",
    b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    b"AUTH LOGIN\r\n",
    b"YWxpY2U=\r\n",
    b"*\r\n",
    b"CAPA\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"LIST 1\r\n",
    b"UIDL\r\n",
    b"UIDL 1\r\n",
    b"RETR 1\r\n",
    b"RETR 2\r\n",
    b"RETR 99999999999999999999\r\n",
    b"TOP 1 0\r\n",
    b"TOP 1 99999999\r\n",  # fetchmail's default: a whole-message TOP, archived
    b"TOP 1 2\r\n",
    b"XTND XLST\r\n",  # unknown verb: relayed, then the relay's own NOOP probe
    b"RETR\x001\r\n",
    b"DELE 1\r\n",
    b"NOOP\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
    b"STLS\r\n",
    b"STLS\r\nUSER x\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"x" * 80,
    b"\x00\xff",
]
UPSTREAM_TOKENS = [
    b"+OK ready <1.2@x>\r\n",
    b"+OK\r\n",
    b"+OK 120 octets\r\n",
    b"+OK 1 uid-one\r\n",
    b"+OK 2 uid-two\r\n",
    b"+OK 1 120\r\n",  # LIST 1 (asked before a TOP)
    b"+OK 1 30\r\n",
    b"-ERR no\r\n",
    b"+ \r\n",
    b"+ VXNlcm5hbWU6\r\n",
    b"+\r\n",
    b"1 uid-one\r\n2 uid-two\r\n",
    b"STLS\r\nUSER\r\nSASL PLAIN\r\n",
    b"From: a@b\r\n\r\nbody\r\n",
    b"..stuffed\r\n",
    *FRAMING_TOKENS,
    b"\n",
    b".",
    b"+",
    b"9" * 80,
    b"+OK 120 octets\r\nline\r\n..x\r\n.\r\n",
    b"+OK\r\n1 uid-one\r\n.\r\n",
]
#: events without bytes
SIGNALS = list(REPLAY_SIGNALS)
KINDS = ["client", "upstream", "next", "next", "next", *SIGNALS]
PREFIXES: list[list[tuple[str, bytes]]] = [
    [],
    [("upstream", b"+OK ready\r\n")],
    [
        ("upstream", b"+OK ready\r\n"),
        ("next", b"USER alice\r\n"),
        ("next", b"+OK\r\n"),
        ("next", b"PASS secret\r\n"),
        ("next", b"+OK logged in\r\n"),
        ("next", b"RETR 1\r\n"),
        ("next", b"+OK 1 uid-one\r\n"),
        ("next", b"+OK 120 octets\r\n"),
    ],
]
MAX_EVENTS = 40


def check_invariants(log: Sequence[object], relay: Pop3Relay, settings: dict) -> None:
    pass_mode = settings.get("on_archive_failure") == "pass"
    upstream_tls = settings.get("target_tls") != "starttls"
    closes = [i for i, a in enumerate(log) if isinstance(a, Close)]
    assert len(closes) <= 1, "Close twice"
    assert (relay.reading is None) == bool(closes), (relay.reading, closes)
    wire: bytearray | None = None  # client bytes of the message being copied
    copy = bytearray()
    dot: str | None = None  # None | "waiting" | "allowed" | "forbidden"
    aborted = False
    # A TOP is copied lazily (proxy/pop3/top.py): its copy may begin after body bytes
    # were relayed, and a partial one is dropped (AbortMessage) without ending the session.
    verb = b""  # the last command the relay sent upstream
    since_status = bytearray()  # client bytes after the status line of that command
    expect_status = False
    for i, a in enumerate(log):
        if closes and i > closes[0]:
            assert not isinstance(a, SendClient | SendUpstream | StartTls | BeginMessage), a
        if isinstance(a, StartTls) and a.side is Side.UPSTREAM:
            upstream_tls = True
        elif isinstance(a, SendUpstream):
            assert upstream_tls or a.data == b"STLS\r\n", f"{a} before TLS with the provider"
            assert wire is None and dot is None, f"{a} while a RETR is open"
            verb = a.data.split()[0].upper() if a.data.split() else b""
            expect_status, since_status = True, bytearray()
        elif isinstance(a, ArchiveAnswer):
            assert dot == "waiting", "archive answer without CommitMessage"
            dot = "allowed" if a.ok or pass_mode else "forbidden"
        elif isinstance(a, SendClient):
            if expect_status:
                expect_status = False
            else:
                since_status += a.data
            assert not aborted, f"{a} after AbortMessage"
            assert dot not in ("waiting", "forbidden"), f"{a} before/without a durable copy"
            if dot == "allowed":
                assert a.data.startswith(b".\r\n"), a
                dot = None
            elif wire is not None:
                wire += a.data
                assert TERMINATOR not in b"\r\n" + wire, "end of RETR relayed before the copy"
        elif isinstance(a, BeginMessage):
            assert wire is None and dot is None, "BeginMessage inside a message"
            # RETR: nothing relayed yet. TOP: what was relayed before the copy began.
            wire = bytearray(since_status) if verb == b"TOP" else bytearray()
            copy = bytearray()
        elif isinstance(a, MessageData):
            assert wire is not None, "MessageData outside a message"
            copy += a.data
        elif isinstance(a, CommitMessage):
            assert wire is not None, "CommitMessage outside a message"
            w = bytes(wire)
            assert w == b"" or w.endswith(b"\r\n"), w[-8:]
            assert (b"\r\n" + w).replace(b"\r\n.", b"\r\n")[2:] == bytes(copy), "copy != wire"
            wire, dot = None, "waiting"
        elif isinstance(a, AbortMessage):
            assert wire is not None, "AbortMessage outside a message"
            wire, aborted = None, verb != b"TOP"  # a partial TOP goes on to its "."
        elif isinstance(a, Close):
            wire = None
    if aborted:
        assert closes, "AbortMessage without Close"


def run_events(
    settings: dict,
    events: Sequence[tuple[str, bytes]],
    verdicts: list[bool],
    tls_ok: list[bool],
    bytewise: bool,
) -> Replayer:
    relay = Pop3Relay(RelaySettings(**settings))
    driver = Replayer(
        relay, archive_verdicts=list(verdicts), tls_verdicts=list(tls_ok), markers=True
    )
    relay.start()
    driver.drain()
    upstream_gone = False
    for kind, data in events:
        if kind in ("upstream_lost", "timeout_upstream") or (
            kind == "eof" and relay.reading is Side.UPSTREAM
        ):
            upstream_gone = True
        pieces = [data[i : i + 1] for i in range(len(data))] if bytewise and data else [data]
        for piece in pieces:
            apply_event(relay, kind, piece)
            driver.drain()
        assert (relay.reading is None) == any(isinstance(a, Close) for a in driver.log)
        upstream_gone = upstream_gone or any(isinstance(a, CloseUpstream) for a in driver.log)
        if upstream_gone:
            assert relay.reading is not Side.UPSTREAM, "waiting for a lost provider"
    # Whatever happened, the session can always be ended cleanly.
    relay.client_lost()
    driver.drain()
    check_invariants(driver.log, relay, settings)
    assert relay.reading is None
    assert sum(isinstance(a, Close) for a in driver.log) == 1
    assert relay.actions() == []
    return driver


def settings_of(s: int) -> dict[str, object]:
    return {
        "client_tls": ["none", "starttls", "implicit"][s % 3],
        "target_tls": ["none", "starttls"][(s >> 2) & 1],
        "on_archive_failure": ["reject", "pass"][(s >> 4) & 1],
        "max_line_length": [2048, 32][(s >> 5) & 1],
        "max_commands": [100, 5][(s >> 6) & 1],
    }


def one_input(data: bytes) -> None:
    settings, events, verdicts, tls, bytewise = decode_input(
        data, settings_of, KINDS, SIGNALS, CLIENT_TOKENS, UPSTREAM_TOKENS, PREFIXES, MAX_EVENTS
    )
    run_events(settings, events, verdicts, tls, bytewise)
    check_dot_reader(data, MultilineReader)


def random_input(rng: random.Random) -> bytes:
    return token_input(rng, (CLIENT_TOKENS, UPSTREAM_TOKENS))


if __name__ == "__main__":
    main(one_input, random_input, atheris)
