"""The one client-side TLS context: towards a provider (proxy/tls.upstream_context) and
towards a mailbox being pulled (archive/pull/common.client_context).

TLS 1.2 is the floor (RFC 8996; RFC 8314 4.1); the peer's certificate and host name are
verified against the system store, or `ca_file` (a private CA), unless verification is
knowingly turned off. A CA file that cannot be loaded becomes the caller's own error
(`fail(reason)`), so each side keeps its one-line message and its exception root.

It lives in archive/ (the layer both proxy/ and archive/pull/ may import) and imports
nothing of the project.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable


def client_context(
    verify: bool, ca_file: str | None, fail: Callable[[str], Exception]
) -> ssl.SSLContext:
    """A context for TLS as a client; raises `fail(reason)` when `ca_file` is unusable."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise fail(str(e)) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
