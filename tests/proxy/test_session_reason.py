"""The session's one-line reasons: what an operator reads in the log after a failure."""

from __future__ import annotations

import ssl

import trio

from proxy.session import _reason


def test_tls_failure_reason_names_the_ssl_error_not_the_trio_wrapper() -> None:
    err = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    err.reason = "CERTIFICATE_VERIFY_FAILED"
    try:
        raise trio.BrokenResourceError from err
    except trio.BrokenResourceError as wrapped:
        assert _reason(wrapped) == "CERTIFICATE_VERIFY_FAILED"


def test_plain_reasons() -> None:
    assert _reason(trio.TooSlowError()) == "timed out"
    assert _reason(ConnectionRefusedError(111, "Connection refused")) == "Connection refused"
    assert _reason(trio.BrokenResourceError()) == "BrokenResourceError"
