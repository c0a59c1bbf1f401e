"""What a failed client-side TLS start most likely means, in words for the log.

Theory of operation. A mail client set to the wrong security mode fails in ways the
TLS library reports cryptically: plaintext sent to an implicit-TLS port (995/465) is
"WRONG_VERSION_NUMBER", or -- because POP3 and SMTP servers speak first and the client
waits for a banner that never comes -- just a timeout; a client doing implicit TLS on a
plaintext/STARTTLS port (110/25/587) sends a TLS ClientHello where a command belongs; a
client that does not trust the certificate ends the handshake with an alert
("SSLV3_ALERT_BAD_CERTIFICATE" is Thunderbird's). Sans-IO: strings and bytes in, one
sentence out, so the session only adds it to its log line (issue 10 item 17).
"""

from __future__ import annotations

#: the first bytes of a TLS record carrying a handshake (ClientHello): type 22, major 3
TLS_HANDSHAKE_PREFIX = b"\x16\x03"

_PLAINTEXT_REASONS = (
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "UNEXPECTED_RECORD",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNKNOWN_PROTOCOL",
)
_UNTRUSTED_REASONS = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_BAD_CERTIFICATE_STATUS",
    "ALERT_DECRYPT_ERROR",
)


def handshake_hint(reason: str, client_tls: str) -> str:
    """A hint for `client TLS handshake failed: <reason>`; "" when there is none."""
    r = reason.upper()
    if any(p in r for p in _UNTRUSTED_REASONS):
        return (
            "the client rejected mailtee's certificate: import the appliance CA "
            "(`proxy-admin tls ca`) into the client, see docs/clients.md"
        )
    if client_tls == "implicit":
        if any(p in r for p in _PLAINTEXT_REASONS):
            return (
                "the client spoke plaintext on this SSL/TLS port: set it to SSL/TLS, "
                "or use a listener with client_tls none/starttls"
            )
        if "TIMED OUT" in r:
            return (
                "the client sent no TLS handshake: it probably expects plaintext or "
                "STARTTLS; this port is SSL/TLS (implicit)"
            )
    return ""


def looks_like_tls(first_bytes: bytes) -> bool:
    """Is this the start of a TLS ClientHello (where a POP3/SMTP command belongs)?"""
    return first_bytes.startswith(TLS_HANDSHAKE_PREFIX)


def implicit_tls_on_plain_port(client_tls: str) -> str:
    """The log sentence for a ClientHello on a listener without implicit TLS."""
    mode = "STARTTLS" if client_tls == "starttls" else "plaintext"
    return (
        f"client began a TLS handshake on a {mode} port (it is set to SSL/TLS): set it to "
        f"{'STARTTLS' if client_tls == 'starttls' else 'no encryption'}, or use a listener "
        "with client_tls implicit; session closed"
    )
