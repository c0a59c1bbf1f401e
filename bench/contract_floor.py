"""The C floor of mailtee's whole POP3 contract (bench/pop3_contract_floor.c).

`build(work)` compiles it with the machine's C compiler into `work` (libcrypto.so.3 at
run time, no headers needed) and returns the binary, or None with the reason on stderr
when there is no compiler: the floor is then left out of the run, nothing else changes.
`start()` runs it as its own process group (stop it with _common.stop). It relays like
bench/pop3_floor.py and does, per RETR, the work mailtee's contract asks for: unstuffed
copy, SHA-256, journal record flushed before the terminator, log line, report pair.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("pop3_contract_floor.c")


def build(work: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("[bench] no C compiler: the contract floor is left out", file=sys.stderr)
        return None
    out = work / "pop3_contract_floor"
    cmd = [cc, "-O2", "-pthread", str(SOURCE), "-o", str(out), "-l:libcrypto.so.3"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"[bench] contract floor not built: {done.stderr.strip()[:300]}", file=sys.stderr)
        return None
    return out


def start(
    binary: Path, listen_port: int, target_port: int, state: Path, *, pairs: bool = True
) -> subprocess.Popen[bytes]:
    """`pairs=False`: no report pair written (to measure what the pairs cost)."""
    state.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), str(listen_port), str(target_port), str(state)]
    if not pairs:
        cmd.append("nopairs")
    with open(state / "floor.err", "ab") as err:  # not the bench's stdout: its JSON
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    from _common import wait_port

    wait_port(listen_port, timeout=60)
    time.sleep(0.1)
    return proc
