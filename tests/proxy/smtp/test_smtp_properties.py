"""Property tests: chunking never changes a session; no input makes the core raise."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from smtp_harness import (
    CLIENT_TOKENS,
    SIGNALS,
    UPSTREAM_TOKENS,
    Driver,
    FakeUpstream,
    check_invariants,
    chunked,
    make_relay,
    message_data,
    reports,
    run_events,
    stuff,
    to_client,
    to_upstream,
)

from proxy.actions import Close

# --- generated valid sessions -----------------------------------------------------------
PIECES = [b".", b"..", b"x", b"Subject: hi", b"\xe3\x81\x82", b" ", b"\t", b"MAIL FROM:<e@x>"]
body_lines = st.lists(st.sampled_from(PIECES), max_size=5).map(b"".join)
bodies = st.lists(body_lines, max_size=8).map(lambda ls: b"".join(ln + b"\r\n" for ln in ls))
addresses = st.sampled_from([b"a@example.org", b"b@example.net", b"", b"\xc3\xa9@x.test"])
transactions = st.tuples(
    addresses, st.lists(addresses, min_size=1, max_size=3), bodies, st.booleans()
)


def client_stream(ehlo: bytes, txs: list[tuple[bytes, list[bytes], bytes, bool]]) -> bytes:
    out = [b"EHLO " + ehlo + b"\r\n"]
    for sender, rcpts, body, extra in txs:
        if extra:
            out.append(b"NOOP\r\nRSET\r\n")
        out.append(b"MAIL FROM:<" + sender + b">\r\n")
        out += [b"RCPT TO:<" + r + b">\r\n" for r in rcpts]
        out.append(b"DATA\r\n" + stuff(body) + b".\r\n")
    out.append(b"QUIT\r\n")
    return b"".join(out)


def run_session(data: list[bytes], upstream_chunk: int | None, **kw: object) -> Driver:
    driver = Driver(make_relay(**kw), upstream=FakeUpstream(), markers=True)
    driver.run(data, upstream_chunk=upstream_chunk)
    return driver


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([b"pc1", b"[192.0.2.1]"]),
    st.lists(transactions, min_size=1, max_size=3),
    st.data(),
)
def test_chunking_never_changes_a_session(
    ehlo: bytes, txs: list[tuple[bytes, list[bytes], bytes, bool]], data: st.DataObject
) -> None:
    stream = client_stream(ehlo, txs)
    whole = run_session([stream], None)
    mode = data.draw(st.sampled_from(["random", "bytewise", "lines"]), label="mode")
    if mode == "bytewise":
        chunks = chunked(stream, range(len(stream)))
    elif mode == "lines":
        chunks = stream.splitlines(keepends=True)
    else:
        chunks = chunked(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=25)))
    up_chunk = data.draw(st.sampled_from([None, 1, 3, 17]), label="upstream chunk")
    split = run_session(chunks, up_chunk)

    for d in (whole, split):
        check_invariants(d.log, d.relay, pass_mode=False)
        assert d.log[-1] == Close() and d.relay.reading is None
        # Transparent: without STARTTLS or injected AUTH the provider sees the client's
        # bytes exactly, and the archive holds every message exactly.
        assert to_upstream(d.log) == stream
        assert bytes(d.upstream.received) == stream  # type: ignore[union-attr]
        assert message_data(d.log) == b"".join(body for _, _, body, _ in txs)
        assert d.commits == len(txs)
        assert [r["smtp"]["mail_from"] for r in reports(d.log)] == [  # type: ignore[index]
            s.decode("utf-8", "replace") for s, _, _, _ in txs
        ]
    assert to_upstream(split.log) == to_upstream(whole.log)
    assert to_client(split.log) == to_client(whole.log)
    assert message_data(split.log) == message_data(whole.log)
    assert [type(a) for a in split.log if not hasattr(a, "data")] == [
        type(a) for a in whole.log if not hasattr(a, "data")
    ]


# --- arbitrary input ----------------------------------------------------------------------
client_bytes = st.one_of(
    st.binary(max_size=40), st.lists(st.sampled_from(CLIENT_TOKENS), max_size=6).map(b"".join)
)
upstream_bytes = st.one_of(
    st.binary(max_size=40), st.lists(st.sampled_from(UPSTREAM_TOKENS), max_size=5).map(b"".join)
)
events = st.one_of(
    st.tuples(st.just("client"), client_bytes),
    st.tuples(st.just("upstream"), upstream_bytes),
    st.tuples(st.just("next"), st.one_of(client_bytes, upstream_bytes)),
    st.tuples(st.sampled_from(SIGNALS), st.just(b"")),
)
relay_settings = st.fixed_dictionaries(
    {
        "client_tls": st.sampled_from(["none", "starttls", "implicit"]),
        "target_tls": st.sampled_from(["none", "starttls"]),
        "target_user": st.sampled_from([None, "bob"]),
        "target_password": st.just("pw"),
        "on_archive_failure": st.sampled_from(["reject", "pass"]),
        "max_line_length": st.sampled_from([32, 2048]),
        "max_message_size": st.sampled_from([20, 10_000]),
        "max_commands": st.sampled_from([5, 100]),
    }
)
# Most sessions start greeted, so that random input reaches the later states.
GREETED = [("upstream", b"220 hi\r\n"), ("next", b"EHLO a\r\n"), ("next", b"250 ok\r\n")]
IN_DATA = [
    *GREETED,
    ("next", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
    ("next", b"250 ok\r\n250 ok\r\n354 go\r\n"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    relay_settings,
    st.sampled_from([[], GREETED, IN_DATA]),
    st.lists(events, max_size=25),
    st.lists(st.booleans(), max_size=4),
    st.lists(st.booleans(), max_size=3),
    st.booleans(),
)
# Regressions: the provider lost after the final dot (the core kept waiting for it), and
# a reply pipelined behind 354 while the copy was being committed (AssertionError).
@example({}, IN_DATA, [("next", b"hello\r\n.\r\n"), ("upstream_lost", b"")], [], [], False)
@example({}, IN_DATA, [("next", b"hi\r\n.\r\n"), ("eof", b"")], [], [], True)
@example(
    {},
    GREETED,
    [
        ("next", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\r\n.\r\n"),
        ("next", b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n"),
    ],
    [],
    [],
    False,
)
def test_arbitrary_input_never_raises(
    kw: dict[str, object],
    prefix: list[tuple[str, bytes]],
    evs: list[tuple[str, bytes]],
    verdicts: list[bool],
    tls_ok: list[bool],
    bytewise: bool,
) -> None:
    """No exception escapes, and check_invariants holds after every step (see harness)."""
    run_events(kw, prefix + evs, verdicts, tls_ok, bytewise=bytewise)
