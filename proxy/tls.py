"""SSL contexts for both sides, and the TLS upgrade of a Trio stream.

TLS 1.2 is the floor on both sides (RFC 8996 deprecates 1.0/1.1; RFC 8314 4.1). The
upstream side verifies the provider's certificate and host name by default
(`target_verify = true`); an operator can add a private CA (`target_ca`) or, knowingly,
turn verification off for one listener (`--no-verify-target`).

Towards clients, TLS 1.2 offers only forward-secret AEAD suites (ECDHE/DHE with AES-GCM
or ChaCha20-Poly1305): the CBC suites carry the Lucky13-class padding-oracle risk
(testssl "LUCKY13 potentially vulnerable"), and every client from the last decade
(Thunderbird, Outlook 2016+, Apple Mail, Android) negotiates an AEAD suite or TLS 1.3.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trio

from archive.tls_client import client_context
from proxy.errors import UpstreamError
from proxy.fastsock import FastSocketStream
from proxy.fasttls import FastTlsStream

#: OpenSSL cipher string for client-side TLS 1.2 (TLS 1.3 suites are all AEAD already).
CLIENT_SIDE_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The context for TLS towards mail clients (STARTTLS/STLS and implicit TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CLIENT_SIDE_CIPHERS)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise UpstreamError(f"cannot load the client-side certificate {cert}: {e}") from None
    return ctx


def upstream_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """The context for TLS towards the provider."""
    return client_context(
        verify, ca_file, lambda why: UpstreamError(f"cannot load target_ca {ca_file}: {why}")
    )


async def wrap(
    stream: trio.abc.Stream,
    ctx: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    timeout: float,  # noqa: ASYNC109 - the handshake alone gets this limit
) -> FastTlsStream | trio.SSLStream[trio.abc.Stream]:
    """Handshake TLS over `stream`; raises trio.TooSlowError or ssl/trio errors on failure.

    A `FastSocketStream` (every accepted and connected socket of the relay) gets a
    `FastTlsStream` (one socket read per wake-up, every complete record decrypted at
    once); any other stream (a test's) gets `trio.SSLStream`. The two behave the same
    to the session.
    """
    with trio.fail_after(timeout):
        if type(stream) is FastSocketStream:
            return await FastTlsStream.wrap(
                stream, ctx, server_side=server_side, server_hostname=server_hostname
            )
        tls = trio.SSLStream(stream, ctx, server_side=server_side, server_hostname=server_hostname)
        await tls.do_handshake()
    return tls
