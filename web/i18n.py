"""The UI's words in English and Japanese (web/messages.toml), and which language a
request gets.

Order: `?lang=` (also remembered in a cookie), the `lang` cookie, Accept-Language (first
supported tag by q-value), English.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

LANGS = ("en", "ja")

#: message key -> language -> text, from web/messages.toml (a catalog translators edit
#: without touching code; the package data that setuptools installs beside this module)
TEXT: dict[str, dict[str, str]] = tomllib.loads(
    Path(__file__).with_name("messages.toml").read_text("utf-8")
)


def pick_language(query: str | None, cookie: str | None, accept: str | None) -> str:
    for v in (query, cookie):
        if v in LANGS:
            return v  # type: ignore[return-value]
    best, best_q = "en", -1.0
    for item in (accept or "").split(",")[:20]:
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > best_q:
            best, best_q = primary, q
    return best


def translator(lang: str):  # type: ignore[no-untyped-def]
    def t(key: str, **kw: object) -> str:
        entry = TEXT.get(key)
        text = entry.get(lang, entry["en"]) if entry else key
        return text.format(**kw) if kw else text

    return t
