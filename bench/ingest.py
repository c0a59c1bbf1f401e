"""Ingest benchmark: mailtee's archive store vs notmuch (Xapian) on the same Maildir.

    python bench/ingest.py [--work DIR] [--corpus MAILDIR] [--count N] [--only mailtee|notmuch]

Without --corpus, a corpus of --count messages is generated with bench/corpus.py into
WORK/maildir (reused when it already has enough messages). With --count smaller than the
corpus, the first N messages are hard-linked into WORK/subset-N so both tools see the same
files. mailtee ingests through `Archive.import_path` (the same batch pipeline as report
ingest: parse, pack, index, catalog, all committed) into WORK/mailtee; notmuch runs
`notmuch new` with its database in WORK/notmuch. Prints one JSON object; sizes are bytes
and `store_ratio` is (packs + catalog + index) / raw corpus bytes. The machine is shared
and noisy: besides wall-clock rates, `msg_per_cpu_s` (messages per CPU second of all the
tool's threads) is reported, which contention distorts much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

from archive.store import Archive  # noqa: E402


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mail_files(maildir: Path) -> list[Path]:
    files = [p for sub in ("cur", "new") for p in (maildir / sub).iterdir() if p.is_file()]
    return sorted(files, key=lambda p: p.name)


def prepare(work: Path, corpus_dir: Path | None, count: int) -> Path:
    if corpus_dir is None:
        corpus_dir = work / "maildir"
        have = len(mail_files(corpus_dir)) if (corpus_dir / "cur").is_dir() else 0
        if have < count:
            shutil.rmtree(corpus_dir, ignore_errors=True)
            corpus.generate(corpus_dir, count)
    files = mail_files(corpus_dir)
    if count >= len(files):
        return corpus_dir
    subset = work / f"subset-{count}"
    if not subset.is_dir() or len(mail_files(subset)) != count:
        shutil.rmtree(subset, ignore_errors=True)
        for sub in ("cur", "new", "tmp"):
            (subset / sub).mkdir(parents=True)
        for p in files[:count]:
            os.link(p, subset / p.parent.name / p.name)
    return subset


def run_mailtee(maildir: Path, state: Path, n: int) -> dict:
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    archive = Archive(state)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    stats = archive.import_path(maildir)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    archive.close()
    root = state / "archive"
    sizes = {
        "packs_bytes": dir_bytes(root / "packs"),
        "catalog_bytes": sum(p.stat().st_size for p in root.glob("catalog.sqlite*")),
        "index_bytes": dir_bytes(root / "index"),
    }
    return {
        "messages": stats.new_messages,
        "errors": len(stats.errors),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "msg_per_s": round(n / seconds, 1),
        "msg_per_cpu_s": round(n / cpu, 1),
        **sizes,
        "store_bytes": sum(sizes.values()),
    }


def notmuch_config(work: Path, maildir: Path) -> Path:
    db = work / "notmuch"
    shutil.rmtree(db, ignore_errors=True)
    db.mkdir(parents=True)
    cfg = work / "notmuch-config"
    cfg.write_text(
        f"[database]\npath={db}\nmail_root={maildir}\n[user]\nname=Bench\n"
        "primary_email=bench@example.com\n[new]\ntags=\n[search]\nexclude_tags=\n"
        "[maildir]\nsynchronize_flags=false\n"
    )
    return cfg


def run_notmuch(work: Path, maildir: Path, n: int) -> dict:
    cfg = notmuch_config(work, maildir)
    env = {**os.environ, "NOTMUCH_CONFIG": str(cfg)}
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(["notmuch", "new", "--quiet"], env=env, capture_output=True)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    count = subprocess.run(
        ["notmuch", "count", "*"], env=env, capture_output=True, text=True
    ).stdout.strip()
    return {
        "messages": int(count or 0),
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "msg_per_s": round(n / seconds, 1),
        "msg_per_cpu_s": round(n / cpu, 1),
        "db_bytes": dir_bytes(work / "notmuch"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mailtee-bench"))
    ap.add_argument("--corpus", type=Path, help="existing Maildir (default: generate one)")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--only", choices=("mailtee", "notmuch"), help="run one side only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    maildir = prepare(args.work, args.corpus, args.count)
    files = mail_files(maildir)
    sizes = [p.stat().st_size for p in files]
    raw = sum(sizes)
    result: dict = {
        "benchmark": "ingest",
        "messages": len(files),
        "corpus_bytes": raw,
        "median_message_bytes": int(statistics.median(sizes)),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg()[0],
    }
    m = nm = None
    if args.only != "notmuch":
        m = run_mailtee(maildir, args.work / "mailtee", len(files))
        m["store_ratio"] = round(m["store_bytes"] / raw, 3)
        result["mailtee"] = m
    if args.only != "mailtee" and shutil.which("notmuch"):
        nm = run_notmuch(args.work, maildir, len(files))
        nm["db_ratio"] = round(nm["db_bytes"] / raw, 3)
        result["notmuch"] = nm
    if m and nm:
        result["rate_ratio_mailtee_over_notmuch"] = round(m["msg_per_s"] / nm["msg_per_s"], 2)
        result["cpu_rate_ratio_mailtee_over_notmuch"] = round(
            m["msg_per_cpu_s"] / nm["msg_per_cpu_s"], 2
        )
    result["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
