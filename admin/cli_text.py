"""Text that `proxy-admin` prints, built without typer: tables, JSON, error lines, and the
escaping of text from mail (`terminal_safe`).

Why a module of its own: admin/cli_fast.py answers the common `search` without importing
typer (issue 12 item 4), and it must print exactly what the typer command prints. Both
build their output here (the search's own table: admin/cli_search.py).
admin/cli_common.py re-exports these names. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PROG = "proxy-admin"

#: Invisible characters that reorder what a terminal shows (bidi embeddings, overrides and
#: isolates, the directional marks): a subject can use them to show a different text
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escaped(ch: str) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def terminal_safe(text: str, *, multiline: bool = False) -> str:
    """`text` with every control character shown as an escape (ESC as `\\x1b`).

    Why: subjects, names, file names and bodies come from mail, and mail can be hostile.
    Printed as they are, an ESC or a C1 control starts a terminal escape sequence (clear
    the screen, set the window title, rewrite what the operator sees, on some terminals
    write the clipboard), and a bidi override shows a different text than the one there
    is. Escaped, the operator sees what is there. `multiline` keeps line feeds and tabs
    (a message body, whose CRLF line ends become line feeds); every other control is
    escaped, a lone CR included (it would let a line overwrite itself). `--json` and
    `show --raw` keep the exact values.
    """
    if text.isascii() and text.isprintable():
        return text
    import unicodedata

    keep = "\n\t" if multiline else ""
    if multiline:
        text = text.replace("\r\n", "\n")  # a line end, not a control to show
    return "".join(
        _escaped(ch) if (ch not in keep and unicodedata.category(ch) == "Cc") or ch in _BIDI else ch
        for ch in text
    )


def error_line(message: str) -> str:
    # Keep it one line whatever the message carries (file names with newlines, etc), and
    # no control character from it reaches the terminal.
    flat = " ".join(str(message).split("\n"))
    return f"{PROG}: error: {terminal_safe(flat)}"


def to_json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=str)


def char_width(ch: str) -> int:
    """Terminal columns of one character: 2 for East Asian wide/fullwidth, 0 for
    combining marks and controls, else 1 (what wcwidth(3) says for the common cases)."""
    import unicodedata

    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Cc", "Cf", "Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal (請求書 is 6, not 3)."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def clip(text: str, width: int) -> str:
    """`text` on one line, cut to at most `width` columns with an ellipsis (controls
    escaped first, so the width counts what the terminal shows)."""
    text = terminal_safe(" ".join(text.split()))
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Aligned plain-text columns (no box drawing, so `grep`/`awk` still work), padded by
    display width so that Japanese text keeps the columns straight."""
    cells = [[terminal_safe(str(h)) for h in headers]] + [
        ["" if v is None else terminal_safe(str(v)) for v in r] for r in rows
    ]
    widths = [max(display_width(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c + " " * (w - display_width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]
    return "\n".join(lines)
