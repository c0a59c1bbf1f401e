"""Client commands: parsing and how the upstream's answer to each is framed.

Theory of operation. The relay forwards the client's command line byte for byte; it
only needs to know (a) whether a positive answer is one line or a multi-line response
(RFC 1939 section 3), and (b) what to learn from it: account names, message numbers,
unique-ids. `classify()` turns a line into a `Command` carrying that knowledge. Unknown
commands are relayed as single-line exchanges (transparency); if an upstream answers
one with more lines, the extra lines arrive as unsolicited data and end the session
rather than desynchronise the relay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from proxy.pop3.limits import UIDL_MAX
from proxy.pop3.sasl import SaslAccount


class Kind(enum.Enum):
    SINGLE = "single"  # one status line (NOOP, DELE, RSET, STAT, unknown, ...)
    PROBE = "probe"  # the relay's own NOOP after a +OK to an unknown verb (relay.py)
    MULTI = "multi"  # +OK then data lines (AUTH without mechanism)
    LIST_ALL = "list-all"  # multi-line "n size" lines, remembered (TOP needs sizes)
    LIST_ONE = "list-one"  # "+OK n size", remembered
    TOP = "top"  # multi-line, archived when it turns out to be the whole message (top.py)
    CAPA = "capa"  # multi-line, rewritten (capa.py)
    UIDL_ALL = "uidl-all"  # multi-line "n uid" lines, remembered
    UIDL_ONE = "uidl-one"  # "+OK n uid", remembered
    RETR = "retr"  # multi-line, archived
    USER = "user"
    PASS = "pass"
    APOP = "apop"
    AUTH = "auth"  # "+ " continuations until +OK / -ERR
    QUIT = "quit"
    STLS = "stls"  # answered by the relay, never forwarded


@dataclass(slots=True)
class Command:
    kind: Kind
    verb: str
    #: the exact line to send upstream (the client's own bytes)
    line: bytes
    msg: int | None = None
    #: the account name this command logs in as, recorded only on +OK
    account: str | None = None
    #: TOP's line count (None: absent or not a number -- treated as "all lines")
    lines: int | None = None
    sasl: SaslAccount | None = field(default=None, repr=False)


def parse_msg_number(arg: bytes) -> int | None:
    """RFC 1939 section 3: a message-number is a decimal number from 1 up."""
    if not arg.isdigit() or len(arg) > 10:
        return None
    n = int(arg)
    return n if n >= 1 else None


def _name(arg: bytes) -> str | None:
    return arg.decode("utf-8", "replace") or None


def classify(line: bytes) -> Command:
    """Describe one client command line (CRLF included)."""
    # Split on any run of SP or TAB, leading ones included: a server that is lenient
    # about separators must never see a RETR or TOP the relay took for something else.
    # (Other control bytes never get here: the relay refuses them.)
    words = line[:-2].split()
    verb = words[0].decode("ascii", "replace").upper() if words else ""
    args = words[1:]
    # PASS arguments may contain spaces (RFC 1939 section 7); they are never looked at.
    kind = Kind.SINGLE
    cmd = Command(kind, verb, line)
    if verb == "STLS":
        cmd.kind = Kind.STLS
    elif verb == "CAPA":
        cmd.kind = Kind.CAPA
    elif verb == "RETR":
        cmd.kind = Kind.RETR
        cmd.msg = parse_msg_number(args[0]) if len(args) == 1 else None
    elif verb in ("LIST", "UIDL"):
        if not args:
            cmd.kind = Kind.LIST_ALL if verb == "LIST" else Kind.UIDL_ALL
        else:
            cmd.kind = Kind.LIST_ONE if verb == "LIST" else Kind.UIDL_ONE
            cmd.msg = parse_msg_number(args[0])
    elif verb == "TOP":
        cmd.kind = Kind.TOP
        cmd.msg = parse_msg_number(args[0]) if args else None
        count = args[1] if len(args) > 1 else b""
        cmd.lines = int(count) if count.isdigit() and len(count) <= 18 else None
    elif verb == "USER":
        cmd.kind = Kind.USER
        cmd.account = _name(line[5:-2]) if len(line) > 7 else None
    elif verb == "PASS":
        cmd.kind = Kind.PASS
    elif verb == "APOP":
        cmd.kind = Kind.APOP
        cmd.account = _name(args[0]) if args else None
    elif verb == "AUTH":
        if not args:
            cmd.kind = Kind.MULTI  # RFC 1734 era: list the mechanisms
        else:
            cmd.kind = Kind.AUTH
            initial = args[1] if len(args) > 1 else None
            cmd.sasl = SaslAccount(args[0].decode("ascii", "replace"), initial)
    elif verb == "QUIT":
        cmd.kind = Kind.QUIT
    return cmd


def size_pair(line: bytes) -> tuple[int, int] | None:
    """Parse "n size" (a LIST data line, or a `+OK n size` reply without +OK)."""
    words = line.split()
    if len(words) < 2 or not words[1].isdigit() or len(words[1]) > 18:
        return None
    n = parse_msg_number(words[0])
    return None if n is None else (n, int(words[1]))


def uidl_pair(line: bytes) -> tuple[int, str] | None:
    """Parse "n unique-id" (a UIDL data line, or a `+OK n unique-id` reply without +OK)."""
    words = line.split()
    if len(words) < 2:
        return None
    n = parse_msg_number(words[0])
    uid = words[1]
    # every byte 0x21-0x7E (RFC 1939 section 7); translate() checks it in C: a session's
    # UIDL listing is parsed line by line, one call per message of the maildrop
    if n is None or not 1 <= len(uid) <= UIDL_MAX or uid.translate(None, _UID_BYTES):
        return None
    return n, uid.decode("ascii")


#: the bytes a unique-id may hold (deleted by translate(); anything left is not one)
_UID_BYTES = bytes(range(0x21, 0x7F))


#: Verbs known to answer with a single line (RFC 1939, 2449, 6856). A +OK to any other
#: verb is followed by the relay's own NOOP: if the server was in fact sending data
#: lines, they arrive where NOOP's status line should be, and the session ends before
#: the client can be handed a message the relay did not frame (and archive).
SINGLE_LINE_VERBS = frozenset(
    {"NOOP", "DELE", "RSET", "STAT", "USER", "PASS", "APOP", "QUIT", "UTF8", "LANG", "LAST"}
)

#: Kinds whose positive reply is followed by data lines.
MULTILINE_KINDS = frozenset(
    {Kind.MULTI, Kind.CAPA, Kind.UIDL_ALL, Kind.LIST_ALL, Kind.RETR, Kind.TOP}
)
