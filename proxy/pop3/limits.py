"""POP3 limits and fixed protocol texts, each with the RFC it comes from.

The effective line limits of a session come from `RelaySettings.max_line_length`
(config `limits.max_line_length`, at least 512); the RFC values below are the floors the
protocol promises and document why that floor exists.
"""

from __future__ import annotations

#: RFC 1939 section 3 / RFC 2449 section 4: a response line is at most 512 octets, CRLF
#: included. Single-line upstream replies beyond the session limit are treated as hostile.
RESPONSE_LINE_MAX = 512

#: RFC 2449 section 4: a command line is at most 255 octets, CRLF included.
COMMAND_LINE_MAX = 255

#: RFC 5034 section 4: SASL continuation lines are not bound by the 255-octet command
#: limit (tokens and Kerberos tickets are long). Same value as RFC 4954's advice for SMTP.
SASL_LINE_MAX = 12_288

#: RFC 1939 section 7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
UIDL_MAX = 70

#: How many message-number -> unique-id pairs a session remembers. Beyond that the relay
#: asks `UIDL n` before each RETR instead (the mailbox size is the upstream's to choose).
UIDL_CACHE_MAX = 100_000

#: RFC 1939 section 3: a multi-line response ends with CRLF "." CRLF; the first CRLF is
#: the end of the last data line (or of the status line when there is no data).
from proxy.dotstuff import TERMINATOR  # noqa: E402,F401 - one definition

#: RFC 1939 section 3: what is sent after the data lines to end a multi-line response.
END_LINE = b".\r\n"

#: RFC 1939 section 3: status indicators.
OK = b"+OK"
ERR = b"-ERR"
#: RFC 5034 section 4: a SASL server challenge starts with "+" SP.
CONTINUATION = b"+ "

#: A TOP response is captured in memory up to this many octets before the relay opens a
#: spool file for it: most TOPs (headers for a message list) are small and partial, and
#: cost no disk I/O; one that grows past this is spooled like a RETR (top.py).
TOP_HOLD_MAX = 64 * 1024
