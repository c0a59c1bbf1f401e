"""web/messages.toml, the UI's catalog: every key in every language, same placeholders."""

from __future__ import annotations

import string

from web.i18n import LANGS, TEXT, translator


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_has_every_language_with_the_same_placeholders() -> None:
    assert len(TEXT) > 50  # the catalog was found and read
    for key, entry in TEXT.items():
        assert sorted(entry) == sorted(LANGS), key
        assert _fields(entry["ja"]) == _fields(entry["en"]), key


def test_translator_reads_the_catalog() -> None:
    assert translator("ja")("results", n=3) == "3 件"
    assert translator("en")("page", n=2) == "Page 2"
    assert translator("en")("no-such-key") == "no-such-key"
