"""The tantivy full-text index: one document per distinct message, keyed by SHA-256.

Theory of operation. Text is normalised in Python (NFKC, so full-width ASCII and
half-width katakana match their usual forms) and every run of CJK characters is
rewritten as overlapping bigrams ("請求書" -> "請求 求書"; a lone "書" stays); tantivy's
simple tokenizer + lowercase then indexes the result with positions. A CJK query of two
or more characters becomes a phrase of bigrams (exact substring match); a single
character becomes a regex query for bigrams starting or ending with it. Index and query
text go through the same transform, so mixed runs ("請求書1") line up as phrases. Latin
text is searched by word.

Documents are upserted (delete-by-sha, add) so that a crash after the index commit but
before the catalog commit only makes the rerun rewrite the same document. The index holds
no data that is not in the packs + catalog, so it can always be rebuilt from them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tantivy

from archive.errors import ArchiveError

from .origin import query_key
from .query import ORIGIN_FIELD_NAMES, Clause, ParsedQuery

TEXT_FIELDS = ("from", "to", "cc", "bcc", "subject", "body", "attachment", "quoted")
#: Quoted reply lines ("> ...") repeat earlier mail: indexed without positions (a third of
#: the index saved); a phrase matches there when all its words do.
UNPOSITIONED = ("quoted",)
#: Fields a bare word searches (bcc only when asked for by name).
FREE_TEXT_FIELDS = ("subject", "from", "to", "cc", "body", "quoted", "attachment")
ANALYZER = "mailtee"
ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
WRITER_HEAP = 128_000_000
#: Queries of very common words first search this much recent mail (seconds).
RECENT_WINDOW = 3 * 86400
WINDOW_MIN_DOCS = 5000

_CJK = (
    "\u3005\u3006\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uac00-\ud7af\U00020000-\U0002fa1f"
)
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


@functools.cache
def _cjk_run() -> re.Pattern[str]:
    """A run of CJK characters. Compiled on first use (with _cjk_any ~3 ms, which a
    search for Latin words, e.g. `proxy-admin search`, never needs: issue 12 item 4)."""
    return re.compile(f"[{_CJK}]+")


@functools.cache
def _cjk_any() -> re.Pattern[str]:
    """One CJK character (see _cjk_run)."""
    return re.compile(f"[{_CJK}]")


def _analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.remove_long(64))
        .build()
    )


def _bigrams(m: re.Match[str]) -> str:
    s = m.group()
    if len(s) == 1:
        return f" {s} "
    return " " + " ".join(map(str.__add__, s, s[1:])) + " "


def normalize(text: str) -> str:
    """Index-side text preparation (also used by the index rebuild)."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    if _cjk_any().search(text):
        text = _cjk_run().sub(_bigrams, text)
    return text


@dataclass(frozen=True, slots=True)
class IndexDoc:
    sha256: str
    date: int
    size: int
    fields: dict[str, str]  # TEXT_FIELDS -> text
    has_attachment: bool
    keys: frozenset[str]  # ownership keys: addresses and "pop3:<account>"
    addresses: dict[str, list[str]] = field(default_factory=dict)  # from/to/cc/bcc


def _schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_text_field("sha", stored=True, tokenizer_name="raw")
    b.add_integer_field("date", indexed=True, fast=True)
    b.add_integer_field("size", indexed=True, fast=True)
    for name in TEXT_FIELDS:
        option = "basic" if name in UNPOSITIONED else "position"
        b.add_text_field(name, tokenizer_name=ANALYZER, index_option=option)
    b.add_text_field("has", tokenizer_name="raw")
    # every CJK character of the free-text fields, for one-character queries
    b.add_text_field("cjk1", tokenizer_name="raw", index_option="basic")
    for name in ADDRESS_FIELDS:  # exact, fast `from:alice@example.com`
        b.add_text_field(f"{name}_addr", tokenizer_name="raw", index_option="basic")
    b.add_text_field("keys", tokenizer_name="raw")
    return b.build()


class IndexSchemaError(ArchiveError):
    """The index on disk has another schema: it must be rebuilt."""


class MessageIndex:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self._analyzer = _analyzer()
        try:
            self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        except ValueError as e:
            if "schema does not match" not in str(e):
                raise
            raise IndexSchemaError(
                f"{path}: the search index was built by another mailtee version; "
                "rebuild it from packs + catalog (Archive.rebuild_index, "
                "`proxy-admin index rebuild`)"
            ) from None
        self.index.register_tokenizer(ANALYZER, self._analyzer)
        self._writer: tantivy.IndexWriter | None = None

    # --- writing (archive write lock held) -------------------------------------------

    def begin(self) -> None:
        if self._writer is None:
            self._writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=1)

    def upsert(self, doc: IndexDoc) -> None:
        assert self._writer is not None
        d = tantivy.Document()
        d.add_text("sha", doc.sha256)
        d.add_integer("date", doc.date)
        d.add_integer("size", doc.size)
        chars: set[str] = set()
        for name, text in doc.fields.items():
            if text:
                d.add_text(name, normalize(text))
                if name in FREE_TEXT_FIELDS and not text.isascii():
                    chars.update(_cjk_any().findall(unicodedata.normalize("NFKC", text)))
        for ch in sorted(chars):
            d.add_text("cjk1", ch)
        if doc.has_attachment:
            d.add_text("has", "attachment")
        for key in sorted(doc.keys):
            d.add_text("keys", key)
        for name, addrs in doc.addresses.items():
            for addr in dict.fromkeys(addrs):
                d.add_text(f"{name}_addr", addr)
        self._writer.delete_documents_by_term("sha", doc.sha256)
        self._writer.add_document(d)

    def delete(self, sha256: str) -> None:
        assert self._writer is not None
        self._writer.delete_documents_by_term("sha", sha256)

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.commit()

    def end(self) -> None:
        """Release the tantivy writer (and its lock) so other processes may write."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.wait_merging_threads()
        self.index.reload()

    def clear(self) -> None:
        assert self._writer is not None
        self._writer.delete_all_documents()

    # --- reading ---------------------------------------------------------------------

    def count(self) -> int:
        self.index.reload()
        return self.index.searcher().num_docs

    def tokens(self, text: str) -> list[str]:
        if not text.isascii():  # ASCII is NFKC-stable and has no CJK
            text = unicodedata.normalize("NFKC", text)
            text = _cjk_run().sub(_bigrams, text)
        return list(self._analyzer.analyze(text))

    def _text_query(self, field: str, text: str) -> tantivy.Query:
        words = self.tokens(text)
        if not words:
            return tantivy.Query.empty_query()
        if len(words) == 1:
            word = words[0]
            if len(word) == 1 and not word.isascii() and _cjk_any().match(word):
                # a lone character: any bigram that starts or ends with it, or itself
                c = re.escape(word)
                return tantivy.Query.regex_query(self.schema, field, f"{c}.?|.{c}")
            return tantivy.Query.term_query(self.schema, field, word)
        if field in UNPOSITIONED:
            terms = [tantivy.Query.term_query(self.schema, field, w) for w in dict.fromkeys(words)]
            return tantivy.Query.boolean_query([(tantivy.Occur.Must, t) for t in terms])
        return tantivy.Query.phrase_query(self.schema, field, list[str | tuple[int, str]](words))

    def _clause(self, c: Clause) -> tantivy.Query:
        S = self.schema
        if c.field == "text":
            words = self.tokens(c.value)
            one = words[0] if len(words) == 1 and len(words[0]) == 1 else ""
            if one and not one.isascii() and _cjk_any().match(one):
                return tantivy.Query.term_query(S, "cjk1", words[0])
            subs = [(tantivy.Occur.Should, self._text_query(f, c.value)) for f in FREE_TEXT_FIELDS]
            return tantivy.Query.boolean_query(subs)
        if c.field == "body":
            subs = [
                (tantivy.Occur.Should, self._text_query(f, c.value)) for f in ("body", "quoted")
            ]
            return tantivy.Query.boolean_query(subs)
        if c.field in ADDRESS_FIELDS and _ADDRESS.match(c.value):
            return tantivy.Query.term_query(S, f"{c.field}_addr", c.value.lower())
        if c.field in TEXT_FIELDS:
            return self._text_query(c.field, c.value)
        if c.field == "has":
            return tantivy.Query.term_query(S, "has", c.value)
        if c.field in ORIGIN_FIELD_NAMES:
            return tantivy.Query.term_query(S, "keys", query_key(c.field, c.value))
        if c.field in ("date", "size"):
            return tantivy.Query.range_query(
                S,
                c.field,
                tantivy.FieldType.Integer,
                lower_bound=c.low,
                upper_bound=c.high,
                include_upper=c.high is None,
            )
        raise ValueError(f"unknown field {c.field}")  # query.py rejects these first

    def compile(self, q: ParsedQuery, keys: Iterable[str] | None) -> tantivy.Query:
        subs: list[tuple[tantivy.Occur, tantivy.Query]] = []
        for c in q.clauses:
            occur = tantivy.Occur.MustNot if c.negated else tantivy.Occur.Must
            subs.append((occur, self._clause(c)))
        if keys is not None:
            keys = sorted(set(keys))
            owned = (
                tantivy.Query.term_set_query(self.schema, "keys", keys)
                if keys
                else tantivy.Query.empty_query()
            )
            subs.append((tantivy.Occur.Must, owned))
        if not any(o == tantivy.Occur.Must for o, _ in subs):
            subs.append((tantivy.Occur.Must, tantivy.Query.all_query()))
        return tantivy.Query.boolean_query(subs)

    def search(
        self,
        q: ParsedQuery,
        keys: Iterable[str] | None,
        limit: int,
        offset: int = 0,
        *,
        count: bool = True,
    ) -> tuple[list[str], int | None]:
        """SHA-256s of matches, newest first, and the number of matches (if `count`)."""
        query = self.compile(q, keys)
        searcher = self.index.searcher()
        if limit <= 0:
            return [], searcher.search(query, 1, count=True).count  # type: ignore[attr-defined]
        # never more than there are documents (a huge --limit is not an OverflowError)
        n = min(limit + offset, max(searcher.num_docs, 1))
        if offset == 0 and self._common(searcher, q):
            total = searcher.search(query, 1, count=True).count if count else None  # type: ignore[attr-defined]
            hits = self._newest(searcher, query, n, True)
        else:
            # one pass counts and sorts (a phrase is verified once, not twice: ~2x faster)
            result = searcher.search(
                query, n, count=count, order_by_field="date", order=tantivy.Order.Desc
            )
            total = result.count if count else None  # type: ignore[attr-defined]
            hits = [addr for _, addr in result.hits][offset:]
        return [searcher.doc(addr)["sha"][0] for addr in hits], total

    def _common(self, searcher: tantivy.Searcher, q: ParsedQuery) -> bool:
        """True if every match must contain a very frequent body word (worth windowing)."""
        threshold = max(WINDOW_MIN_DOCS, searcher.num_docs // 10)
        for c in q.clauses:
            if c.negated or c.field not in ("text", "body"):
                continue
            words = self.tokens(c.value)
            if words and all(searcher.doc_freq("body", w) >= threshold for w in words):
                return True
        return False

    def _newest(
        self, searcher: tantivy.Searcher, query: tantivy.Query, n: int, common: bool
    ) -> list:
        """Top `n` by date. Sorting visits every match; for a query made of very common
        words, first look only at the most recent mail, which almost always holds `n`."""
        if common:
            newest = searcher.search(
                tantivy.Query.all_query(), 1, order_by_field="date", order=tantivy.Order.Desc
            ).hits
            if newest:
                recent = tantivy.Query.range_query(
                    self.schema,
                    "date",
                    tantivy.FieldType.Integer,
                    lower_bound=newest[0][0] - RECENT_WINDOW,
                    use_inverted_index=True,
                )
                windowed = tantivy.Query.boolean_query(
                    [(tantivy.Occur.Must, query), (tantivy.Occur.Must, recent)]
                )
                result = searcher.search(
                    windowed, n, count=False, order_by_field="date", order=tantivy.Order.Desc
                )
                if len(result.hits) >= n:
                    return [addr for _, addr in result.hits]
        result = searcher.search(
            query, n, count=False, order_by_field="date", order=tantivy.Order.Desc
        )
        return [addr for _, addr in result.hits]

    def all_shas(self) -> set[str]:
        searcher = self.index.searcher()
        n = searcher.num_docs
        if not n:
            return set()
        result = searcher.search(tantivy.Query.all_query(), n)
        return {searcher.doc(addr)["sha"][0] for _, addr in result.hits}
