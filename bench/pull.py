"""Pull benchmark: mailtee's first IMAP pull vs mbsync (isync) on the same Dovecot mailbox.

    python bench/pull.py [--work DIR] [--count 10000] [--folders 20] [--profile FILE]

A private Dovecot (tests/fixtures/dovecot_imap.py, loopback) gets the bench corpus
(bench/corpus.py, --count messages) twice: user `flat` holds them all in INBOX, user
`tree` spreads them over --folders folders. Measured in one run, one after the other:

- `mailtee_first_pull`: `archive.pull.runner.pull_mailboxes` of `flat` into an empty
  state dir -- every message fetched with BODY.PEEK[], written through the spool and
  made durable (report pairs fsync'd), state committed; the archive ingest that `pull`
  does afterwards is timed separately (`mailtee_ingest`);
- `mbsync_first_pull`: `mbsync -a` of the same mailbox into an empty local Maildir
  (isync's own durability: it fsyncs by default, `FSync yes`);
- `mailtee_incremental`: a second pull of `tree` (all folders already archived, nothing
  new) -- the STATUS round trip per folder.

Prints one JSON object with the rates, the ratio mailtee/mbsync, and the targets
(>= 500 msg/s, >= 50 % of mbsync, incremental <= 1 s). With --profile, the mailtee
first pull runs under cProfile and the top functions are written to FILE.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import corpus  # noqa: E402
from _common import emit, filesystem_of, log, machine_info  # noqa: E402

from admin.config import Config, MailboxConfig, Secrets  # noqa: E402
from archive.pull.runner import pull_mailboxes  # noqa: E402
from fixtures.dovecot_imap import start_dovecot_imap  # noqa: E402

USERS = {"flat": "flat-bench-pw", "tree": "tree-bench-pw"}


def corpus_files(work: Path, count: int) -> list[Path]:
    maildir = work / "maildir"
    files = sorted((maildir / "cur").glob("*")) if (maildir / "cur").is_dir() else []
    if len(files) < count:
        shutil.rmtree(maildir, ignore_errors=True)
        corpus.generate(maildir, count)
        files = sorted((maildir / "cur").glob("*"))
    return files[:count]


def fill(srv, files: list[Path], folders: int) -> int:  # type: ignore[no-untyped-def]
    total = 0
    for i, p in enumerate(files):
        data = p.read_bytes()
        total += len(data)
        srv.add("flat", "INBOX", data, seen=i % 3 == 0)
        srv.add("tree", "INBOX" if i % folders == 0 else f"Folder{i % folders:02d}", data)
    return total


def mailtee_pull(state: Path, port: int, user: str) -> tuple[float, dict]:
    box = MailboxConfig(
        name=user, protocol="imap", server="127.0.0.1", port=port, tls="none", user=user
    )
    config = Config(mailbox=[box])
    secrets = Secrets(mailbox={user: {"password": USERS[user]}})
    t0 = time.perf_counter()
    (result,) = pull_mailboxes(config, secrets, state, ingest=False)
    return time.perf_counter() - t0, result.as_dict()


def mailtee_ingest(state: Path) -> float:
    from archive.store import Archive

    t0 = time.perf_counter()
    with Archive(state) as archive:
        archive.ingest_pending(state / "reports")
    return time.perf_counter() - t0


def mbsync_pull(work: Path, port: int, fsync: bool = True) -> float:
    local = work / "mbsync-maildir"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir()
    cfg = work / "mbsyncrc"
    cfg.write_text(
        f"FSync {'yes' if fsync else 'no'}\n\n"
        f"IMAPAccount bench\nHost 127.0.0.1\nPort {port}\nUser flat\n"
        f"Pass {USERS['flat']}\nSSLType None\nAuthMechs LOGIN\n\n"
        "IMAPStore remote\nAccount bench\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel bench\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSync Pull\n"
        f"SyncState {work}/mbsync-state/\n"
    )
    shutil.rmtree(work / "mbsync-state", ignore_errors=True)
    (work / "mbsync-state").mkdir()
    t0 = time.perf_counter()
    proc = subprocess.run(["mbsync", "-c", str(cfg), "-a", "-q"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mbsync failed: {proc.stderr.strip()}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--folders", type=int, default=20)
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mailtee-bench-pull-"))
    work.mkdir(parents=True, exist_ok=True)
    files = corpus_files(work, args.count)
    with start_dovecot_imap(users=USERS) as srv:
        log(f"filling Dovecot with {len(files)} messages x 2 users")
        raw_bytes = fill(srv, files, args.folders)
        # warm Dovecot's indexes and the page cache the same way for both tools
        subprocess.run(["doveadm", "-c", str(srv.config_path), "force-resync", "-A", "*"],
                       capture_output=True)  # fmt: skip

        log("mbsync first pull")
        mbsync_s = mbsync_pull(work, srv.imap_port)
        log("mbsync first pull without fsync (for reference)")
        mbsync_nosync_s = mbsync_pull(work, srv.imap_port, fsync=False)

        state = work / "mailtee-state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir()
        log("mailtee first pull")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
        first_s, first = mailtee_pull(state, srv.imap_port, "flat")
        if args.profile:
            prof.disable()
            with open(args.profile, "w") as f:
                pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(40)
        ingest_s = mailtee_ingest(state)

        tree_state = work / "mailtee-tree"
        shutil.rmtree(tree_state, ignore_errors=True)
        tree_state.mkdir()
        log("mailtee first pull of the 20-folder mailbox, then the incremental one")
        mailtee_pull(tree_state, srv.imap_port, "tree")
        incr_s, incr = mailtee_pull(tree_state, srv.imap_port, "tree")

    n = len(files)
    mailtee_rate = n / first_s
    mbsync_rate = n / mbsync_s
    emit(
        {
            "benchmark": "pull",
            "messages": n,
            "raw_bytes": raw_bytes,
            "folders_incremental": args.folders,
            "mailtee_first_pull": {
                "seconds": round(first_s, 3),
                "msg_per_s": round(mailtee_rate, 1),
                "archived": first["new"],
                "ok": first["ok"],
            },
            "mailtee_ingest": {"seconds": round(ingest_s, 3), "msg_per_s": round(n / ingest_s, 1)},
            "mailtee_pull_plus_ingest_msg_per_s": round(n / (first_s + ingest_s), 1),
            "mbsync_first_pull": {
                "seconds": round(mbsync_s, 3),
                "msg_per_s": round(mbsync_rate, 1),
            },
            "mbsync_first_pull_fsync_no": {
                "seconds": round(mbsync_nosync_s, 3),
                "msg_per_s": round(n / mbsync_nosync_s, 1),
            },
            "ratio_mailtee_to_mbsync": round(mailtee_rate / mbsync_rate, 3),
            "ratio_mailtee_to_mbsync_fsync_no": round(mailtee_rate / (n / mbsync_nosync_s), 3),
            "mailtee_incremental": {
                "seconds": round(incr_s, 3),
                "new": incr["new"],
                "ok": incr["ok"],
            },
            "targets": {
                "first_pull_msg_per_s_500": mailtee_rate >= 500,
                "ratio_0_5": mailtee_rate / mbsync_rate >= 0.5,
                "incremental_1s": incr_s <= 1.0,
            },
            "filesystem": filesystem_of(work),
            "machine": machine_info(),
            "load_avg": os.getloadavg(),
        }
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    _ = json


if __name__ == "__main__":
    main()
