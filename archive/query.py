"""The search syntax, parsed into plain data (no tantivy here, so it is trivially testable).

    word  "a phrase"  -word            free text over subject, from, to, cc, body, attachment
    from: to: cc: bcc: subject: body: attachment:   one field (value may be "quoted")
    has:attachment
    after:2026-01-31   before:2026-02-01   date:2026-01-31     UTC days; after is inclusive
    size>100k  size<2M  size>=N  size<=N                     bytes, k/M/G suffixes (1024)
    folder:Archive/2024   mailbox:NAME          pulled mail: folder (and its subfolders),
                                                [[mailbox]] name; exact, case-insensitive

All clauses must match (AND). A `-` in front of any clause negates it. A `name:value`
whose name is not a field is searched as free text (so "re:" or URLs still work).
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass

from archive.errors import ArchiveError

TEXT_FIELD_NAMES = ("from", "to", "cc", "bcc", "subject", "body", "attachment")
#: exact-match fields about where pulled mail came from (archive/origin.py)
ORIGIN_FIELD_NAMES = ("folder", "mailbox")
_SIZE = re.compile(r"^size(>=|<=|>|<)(\d+(?:\.\d+)?)([kmg]?)b?$", re.I)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class QueryError(ArchiveError, ValueError):
    """The query cannot be understood; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Clause:
    field: str  # "text", a TEXT_FIELD_NAMES entry, "has", "date", "size"
    value: str = ""
    low: int | None = None  # inclusive (date: epoch seconds; size: bytes)
    high: int | None = None  # exclusive
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    clauses: tuple[Clause, ...]

    @property
    def is_empty(self) -> bool:
        return not self.clauses


def _day(value: str, what: str) -> int:
    v = value.replace("/", "-")
    try:
        if "T" in v or " " in v:
            t = dt.datetime.fromisoformat(v)
        else:
            t = dt.datetime.combine(dt.date.fromisoformat(v), dt.time())
    except ValueError:
        raise QueryError(f"{what}:{value}: expected a date like 2026-01-31") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp())


def _split(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    lexer.quotes = '"'
    try:
        return list(lexer)
    except ValueError:
        raise QueryError("unbalanced double quote") from None


def parse_query(text: str) -> ParsedQuery:
    clauses: list[Clause] = []
    for token in _split(text):
        negated = token.startswith("-") and len(token) > 1
        if negated:
            token = token[1:]
        clauses.append(_clause(token, negated))
    return ParsedQuery(tuple(c for c in clauses if c is not None))


def _clause(token: str, negated: bool) -> Clause:
    m = _SIZE.match(token)
    if m:
        op, number, unit = m.groups()
        n = int(float(number) * _UNITS[unit.lower()])
        low, high = {
            ">": (n + 1, None),
            ">=": (n, None),
            "<": (None, n),
            "<=": (None, n + 1),
        }[op]
        return Clause("size", low=low, high=high, negated=negated)
    name, sep, value = token.partition(":")
    name = name.lower()
    if sep and value:
        if name in TEXT_FIELD_NAMES or name in ORIGIN_FIELD_NAMES:
            return Clause(name, value, negated=negated)
        if name == "has":
            if value.lower() not in ("attachment", "attachments"):
                raise QueryError(f"has:{value}: only has:attachment is supported")
            return Clause("has", "attachment", negated=negated)
        if name == "after":
            return Clause("date", low=_day(value, name), negated=negated)
        if name == "before":
            return Clause("date", high=_day(value, name), negated=negated)
        if name == "date":
            start = _day(value, name)
            return Clause("date", low=start, high=start + 86400, negated=negated)
    elif sep and name in (*TEXT_FIELD_NAMES, *ORIGIN_FIELD_NAMES, "has", "after", "before", "date"):
        raise QueryError(f"{name}: needs a value")
    return Clause("text", token, negated=negated)
