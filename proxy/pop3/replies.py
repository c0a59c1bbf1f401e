"""The replies the relay writes itself (everything else is the upstream's, verbatim).

Response codes in brackets are RFC 3206's: `SYS/TEMP` tells the client the failure is the
system's and temporary, so it retries later instead of asking the user for a password.
None of these texts carries exception text or anything a peer sent.
"""

from __future__ import annotations

# RFC 2595 section 4: the positive answer to STLS; TLS negotiation follows immediately.
STLS_BEGIN = b"+OK Begin TLS negotiation\r\n"
# RFC 2595 section 4: -ERR when TLS is not offered or already active.
STLS_UNAVAILABLE = b"-ERR STLS not available\r\n"

LINE_TOO_LONG = b"-ERR line too long\r\n"
BAD_COMMAND_BYTES = b"-ERR command contains control characters\r\n"
BAD_LINE_ENDING = b"-ERR command must end with CRLF and contain no other CR or LF\r\n"
TOO_MANY_COMMANDS = b"-ERR [SYS/TEMP] too many commands in one session\r\n"
IDLE_TIMEOUT = b"-ERR [SYS/TEMP] idle timeout\r\n"

UPSTREAM_UNAVAILABLE = b"-ERR [SYS/TEMP] mail server unavailable, try again later\r\n"
UPSTREAM_TLS_FAILED = b"-ERR [SYS/TEMP] cannot secure the connection to the mail server\r\n"
UPSTREAM_LOST = b"-ERR [SYS/TEMP] connection to the mail server lost\r\n"
UPSTREAM_TIMEOUT = b"-ERR [SYS/TEMP] mail server timed out\r\n"
UPSTREAM_PROTOCOL = b"-ERR [SYS/TEMP] mail server protocol error\r\n"
