"""Property tests: chunking never changes what the relay does; no input breaks it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pop3_harness import (
    CAPA_REPLY,
    GREETING,
    Driver,
    chunked,
    make_relay,
    merged,
    message_data,
    to_client,
)

from proxy.actions import (
    AbortMessage,
    Action,
    BeginMessage,
    Close,
    CommitMessage,
    MessageData,
    SendClient,
    Side,
    StartTls,
)
from proxy.errors import ProxyError
from proxy.pop3.multiline import stuff

cuts = st.lists(st.integers(min_value=1, max_value=2000), max_size=25)
bodies = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=15,
).map(lambda lines: b"".join(line + b"\r\n" for line in lines))


def valid_session(body1: bytes, body2: bytes) -> tuple[list[bytes], list[bytes]]:
    """(client segments, upstream replies) of a complete session with two RETRs.

    Each client segment may be split anywhere but not joined with the next one when it
    ends in STLS (a client waits for STLS's answer); replies are never joined either.
    """
    client = [
        b"CAPA\r\n",
        b"STLS\r\n",
        b"CAPA\r\nUSER alice\r\nPASS secret\r\nUIDL\r\nLIST\r\nRETR 1\r\n"
        b"TOP 2 0\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n",
    ]
    replies = [
        GREETING,
        CAPA_REPLY,
        CAPA_REPLY,
        b"+OK\r\n",
        b"+OK Logged in.\r\n",
        b"+OK\r\n1 uid-one\r\n.\r\n",  # message 2's UIDL is not listed: asked for
        b"+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n",
        b"+OK message follows\r\n" + stuff(body1) + b".\r\n",
        b"+OK 2 uid-two\r\n",  # asked before TOP 2 (its size is listed: no LIST 2)
        b"+OK\r\nSubject: x\r\n\r\n.\r\n",  # partial (0 lines, short of 20): no copy
        b"+OK\r\n" + stuff(body2) + b".\r\n",
        b"+OK deleted\r\n",
        b"+OK bye\r\n",
    ]
    return client, replies


def run_session(client: list[list[bytes]], replies: list[list[bytes]]) -> list[Action]:
    driver = Driver(make_relay(client_tls="starttls"))
    return driver.run([c for segment in client for c in segment], replies)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    body1=bodies,
    body2=bodies,
    client_cuts=st.lists(cuts, min_size=3, max_size=3),
    reply_cuts=st.lists(cuts, min_size=13, max_size=13),
)
def test_any_chunking_of_a_valid_session_gives_the_same_actions(
    body1: bytes, body2: bytes, client_cuts: list[list[int]], reply_cuts: list[list[int]]
) -> None:
    client, replies = valid_session(body1, body2)
    reference = run_session([[c] for c in client], [[r] for r in replies])
    split = run_session(
        [chunked(c, k) for c, k in zip(client, client_cuts, strict=True)],
        [chunked(r, k) for r, k in zip(replies, reply_cuts, strict=True)],
    )

    def normal(actions: list[Action]) -> list[Action]:
        return merged(a for a in actions if not isinstance(a, MessageData))

    assert normal(split) == normal(reference)
    assert message_data(split) == message_data(reference) == body1 + body2
    assert reference[-1] == Close()
    assert StartTls(Side.CLIENT) in reference
    # The whole session reached the client in order, with the STLS capability rewritten.
    assert to_client(reference).endswith(b"+OK deleted\r\n+OK bye\r\n")
    capa = CAPA_REPLY.replace(b"STLS\r\n", b"")
    before_tls = capa[: -len(b".\r\n")] + b"STLS\r\n.\r\n"
    stls = b"+OK Begin TLS negotiation\r\n"
    assert to_client(reference).startswith(GREETING + before_tls + stls + capa)


def check_invariants(actions: list[Action], archive_answers: list[bool]) -> None:
    """Archive-before-acknowledge and message framing hold whatever the peers sent."""
    in_message = False
    wire = b""
    data = b""
    answers = iter(archive_answers)
    closed = False
    for a in actions:
        assert not closed, f"{a} after Close"
        if isinstance(a, BeginMessage):
            assert not in_message
            in_message, wire, data = True, b"", b""
        elif isinstance(a, MessageData):
            assert in_message
            data += a.data
        elif isinstance(a, SendClient) and in_message:
            wire += a.data
        elif isinstance(a, CommitMessage):
            assert in_message
            # The client has every line but not the end of the message ...
            assert b"\r\n.\r\n" not in b"\r\n" + wire
            # ... and the copy is exactly what it was served, unstuffed.
            assert stuff(data) == wire
            in_message = False
            next(answers)
        elif isinstance(a, AbortMessage):
            assert in_message
            in_message = False
        elif isinstance(a, Close):
            closed = True


tokens = st.sampled_from(
    [
        b"+OK",
        b"-ERR",
        b"+ ",
        b".",
        b"..",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"1 uid",
        b"RETR 1",
        b"STLS",
        b"CAPA",
        b"AUTH PLAIN",
        b"UIDL",
        b"QUIT",
        b"\x00\xff",
    ]
)
noise = st.lists(st.one_of(tokens, st.binary(max_size=8)), max_size=30).map(b"".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.sampled_from(["client", "upstream"]), noise), max_size=25),
    outcomes=st.lists(st.booleans(), max_size=5),
    client_tls=st.sampled_from(["none", "starttls", "implicit"]),
    target_tls=st.sampled_from(["none", "starttls"]),
    on_failure=st.sampled_from(["reject", "pass"]),
)
def test_arbitrary_bytes_never_break_the_relay(
    steps: list[tuple[str, bytes]],
    outcomes: list[bool],
    client_tls: str,
    target_tls: str,
    on_failure: str,
) -> None:
    driver = Driver(
        make_relay(
            client_tls=client_tls,
            target_tls=target_tls,
            on_archive_failure=on_failure,
            max_line_length=512,
        )
    )
    driver.archive_verdicts = list(outcomes)
    # Prime the session with a greeting and a login half the time, then noise.
    first = [("upstream", GREETING), ("client", b"USER a\r\nPASS b\r\nRETR 1\r\n")]
    try:
        for side, data in first + steps:
            if side == "client":
                driver.relay.receive_client(data)
            else:
                driver.relay.receive_upstream(data)
            driver.drain()
        driver.relay.receive_upstream(b"")
        driver.drain()
    except ProxyError as e:  # allowed by the contract, but the core converts them all
        raise AssertionError(f"peer input escaped as {e!r}") from e
    check_invariants(driver.log, driver.answers)
    assert driver.log[-1] == Close() and driver.relay.reading is None
    if on_failure == "reject" and False in driver.answers:
        # A refused copy never lets the client see the end of that message.
        idx = [i for i, a in enumerate(driver.log) if isinstance(a, CommitMessage)]
        failed_at = idx[driver.answers.index(False)]
        assert driver.log[failed_at + 1 :] and not any(
            isinstance(a, SendClient) for a in driver.log[failed_at + 1 :]
        )


@settings(max_examples=200)
@given(
    raw=st.binary(max_size=300),
    reply_cuts=cuts,
    ok=st.booleans(),
    on_failure=st.sampled_from(["reject", "pass"]),
)
def test_any_message_bytes_are_copied_exactly(
    raw: bytes, reply_cuts: list[int], ok: bool, on_failure: str
) -> None:
    body = raw + b"\r\n"  # a served message always ends with CRLF
    reply = b"+OK\r\n" + stuff(body) + b".\r\n"
    driver = Driver(make_relay(on_archive_failure=on_failure))
    driver.archive_verdicts = [ok]
    driver.run(
        [b"UIDL 1\r\n", b"RETR 1\r\n", b"NOOP\r\n"],
        [[GREETING], [b"+OK 1 u\r\n"], chunked(reply, reply_cuts), [b"+OK\r\n"]],
    )
    check_invariants(driver.log, driver.answers)
    assert message_data(driver.log) == body
    client = to_client(driver.log)
    if ok or on_failure == "pass":
        assert client == GREETING + b"+OK 1 u\r\n" + reply + b"+OK\r\n"
    else:
        assert client == GREETING + b"+OK 1 u\r\n" + reply[: -len(b".\r\n")]
        assert driver.log[-1] == Close()
