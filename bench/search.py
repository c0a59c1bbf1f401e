"""Search benchmark: mailtee vs notmuch on the stores built by bench/ingest.py.

    python bench/search.py [--work DIR] [--queries 40] [--limit 50]

Query classes (deterministic, drawn from the corpus vocabulary): 1-word, 3-word (AND),
phrase (two adjacent words), from: (an address), Japanese (a word, CJK substring
search). Each query asks for the newest `--limit` matches. mailtee is timed in-process
(`Archive.search`, warm); notmuch in-process too, through libnotmuch via ctypes
(query, newest-first sort, fetching `--limit` message ids) so process start-up is not
counted against it. Prints one JSON object with p50/p95 in milliseconds per class.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

from archive.store import Archive  # noqa: E402


def queries(n: int, seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    gen = corpus.Generator(1)  # same vocabulary as the corpus
    common = corpus.COMMON
    vocab = gen.vocab[:3000]
    people = gen.people
    sentences = [gen.paragraph(False).lower().rstrip(".").split() for _ in range(200)]
    phrases = []
    for s in sentences:
        i = rng.randrange(len(s) - 1)
        phrases.append(f'"{s[i]} {s[i + 1]}"'.replace(".", ""))
    return {
        "one_word": [rng.choice(vocab) for _ in range(n)],
        "three_words": [" ".join(rng.sample(common, 3)) for _ in range(n)],
        "phrase": phrases[:n],
        "from": [f"from:{rng.choice(people)}" for _ in range(n)],
        "japanese": [rng.choice(corpus.JAPANESE) for _ in range(n)],
    }


class Notmuch:
    """The few libnotmuch calls a newest-first search needs."""

    def __init__(self, config: Path) -> None:
        lib = ctypes.CDLL("libnotmuch.so.5")
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        lib.notmuch_database_open_with_config.argtypes = [
            cp,
            ctypes.c_int,
            cp,
            cp,
            ctypes.POINTER(vp),
            ctypes.POINTER(cp),
        ]
        lib.notmuch_query_create.argtypes = [vp, cp]
        lib.notmuch_query_create.restype = vp
        lib.notmuch_query_set_sort.argtypes = [vp, ctypes.c_int]
        lib.notmuch_query_search_messages.argtypes = [vp, ctypes.POINTER(vp)]
        lib.notmuch_messages_valid.argtypes = [vp]
        lib.notmuch_messages_get.argtypes = [vp]
        lib.notmuch_messages_get.restype = vp
        lib.notmuch_messages_move_to_next.argtypes = [vp]
        lib.notmuch_message_get_message_id.argtypes = [vp]
        lib.notmuch_message_get_message_id.restype = cp
        lib.notmuch_message_destroy.argtypes = [vp]
        lib.notmuch_query_destroy.argtypes = [vp]
        lib.notmuch_database_destroy.argtypes = [vp]
        self.lib = lib
        self.db = vp()
        err = cp()
        status = lib.notmuch_database_open_with_config(
            None, 0, str(config).encode(), None, ctypes.byref(self.db), ctypes.byref(err)
        )
        if status:
            raise RuntimeError(f"notmuch: cannot open database ({status}): {err.value!r}")

    def search(self, query: str, limit: int) -> list[bytes]:
        lib = self.lib
        q = lib.notmuch_query_create(self.db, query.encode())
        lib.notmuch_query_set_sort(q, 1)  # NOTMUCH_SORT_NEWEST_FIRST
        msgs = ctypes.c_void_p()
        out = []
        if lib.notmuch_query_search_messages(q, ctypes.byref(msgs)) == 0:
            while len(out) < limit and lib.notmuch_messages_valid(msgs):
                m = lib.notmuch_messages_get(msgs)
                out.append(lib.notmuch_message_get_message_id(m))
                lib.notmuch_message_destroy(m)
                lib.notmuch_messages_move_to_next(msgs)
        lib.notmuch_query_destroy(q)
        return out

    def close(self) -> None:
        self.lib.notmuch_database_destroy(self.db)


def timed(fn, qs: list[str], limit: int) -> dict:  # type: ignore[no-untyped-def]
    for q in qs[:3]:
        fn(q, limit)  # warm up
    ms, hits = [], []
    for q in qs:
        t = time.perf_counter()
        n = len(fn(q, limit))
        ms.append((time.perf_counter() - t) * 1000)
        hits.append(n)
    ms.sort()
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[max(0, int(len(ms) * 0.95) - 1)], 2),
        "max_ms": round(ms[-1], 2),
        "mean_hits": round(statistics.mean(hits), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mailtee-bench"))
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--limit", type=int, default=50)
    args = ap.parse_args()
    qs = queries(args.queries)
    archive = Archive(args.work / "mailtee")
    result: dict = {
        "benchmark": "search",
        "messages": archive.count(),
        "queries_per_class": args.queries,
        "limit": args.limit,
        "loadavg_before": os.getloadavg()[0],
        "mailtee": {
            name: timed(lambda q, n: archive.search(q, limit=n), lst, args.limit)
            for name, lst in qs.items()
        },
    }
    archive.close()
    cfg = args.work / "notmuch-config"
    if cfg.exists():
        nm = Notmuch(cfg)
        result["notmuch"] = {name: timed(nm.search, lst, args.limit) for name, lst in qs.items()}
        nm.close()
        result["p95_ratio_mailtee_over_notmuch"] = {
            name: round(
                result["mailtee"][name]["p95_ms"] / max(result["notmuch"][name]["p95_ms"], 1e-3), 2
            )
            for name in qs
        }
    result["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
