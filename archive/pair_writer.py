"""The report writer's own process: `.eml`/`.mpr` pairs written from journal records.

Why a process. The pairs of committed messages used to be written by a thread of the
worker. Both threads run Python under one GIL, and every time the event loop released
it (each send, receive, journal write and flush) the writer could take it; the loop then
waited for it back. Measured with one POP3 session (docs/performance.md, "Sixth pass"):
with the writer held off, the worker served 20-25 % more RETRs per second, and a 50 KB
send to the client took 46 µs of wall time instead of 73. In its own process the writer
has its own interpreter lock; the kernel shares the two cores between them.

What it does. It reads requests from stdin, one JSON line each, a list of jobs:

    [segment_path, header_offset, header_len, data_len, stem, eml, outcome, reply]

For each job it writes the message's `.eml` from the journal record's data (when `eml`
is true: the message was kept in memory, so only the journal holds it on disk) and,
when `outcome` is not null, its `.mpr`: the record's report document with
`upstream` set to the outcome (the bytes `MessageWriter.write_mpr` would write). It
answers with one JSON line, a list with one `[eml_ok, mpr_written, error]` per job.
No fsync: the worker flushes the pairs when it retires their segment, and until then
the journal still holds every one of them (archive.commit). A segment is never recycled
while a pair it holds is due, so the record a job names is stable.

It is started as `python -m archive.pair_writer REPORTS_DIR` (archive.pair_process),
like the worker processes, and imports only what it writes with. It exits at end of
input (the worker closed the pipe, or died).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from archive.durable import write_file
from archive.journal import holds_message
from archive.spool import REPORT_MODE

Job = list[Any]
Result = list[Any]


def _write_eml(path: str, data: bytes) -> None:
    """As `MessageWriter.write_committed_eml`: created with REPORT_MODE (the umask
    applies), and a partial file removed on failure (the next try truncates it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, REPORT_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def write_pair(reports: str, fds: dict[str, int], job: Job) -> Result:
    """One job: its `.eml` (as `MessageWriter.write_committed_eml`), then its `.mpr`
    (as `write_mpr`). A failure removes what it left half written; the pair stays due.

    The bytes read back are checked against the report's size and SHA-256 before the
    `.eml` is written: a record that is not the message's (it cannot be, short of a
    bug) fails loudly here instead of becoming a wrong copy."""
    seg, hoff, hlen, dlen, stem, eml, outcome, reply = job
    prefix = f"{reports}/{stem}"
    try:
        fd = fds.get(seg)
        if fd is None:
            fd = fds[seg] = os.open(seg, os.O_RDONLY)
        doc = json.loads(os.pread(fd, hlen, hoff))["doc"]
        if not isinstance(doc, dict):
            raise TypeError
    except OSError as e:
        return [not eml, None, f"{stem}: cannot read its journal record: {_reason(e)}"]
    except (ValueError, KeyError, TypeError):
        return [not eml, None, f"{stem}: its journal record is not a report"]
    if eml:
        data = os.pread(fd, dlen, hoff + hlen)
        if not holds_message(doc, data):
            return [False, None, f"{stem}.eml: its journal record does not hold the message"]
        try:
            _write_eml(f"{prefix}.eml", data)
        except OSError as e:
            return [False, None, f"{stem}.eml: {_reason(e)}"]
    if outcome is None:
        return [True, None, None]
    tmp = f"{reports}/.{stem}.mpr.tmp"
    doc["upstream"] = {"outcome": outcome, "reply": reply}
    try:
        data = (json.dumps(doc, ensure_ascii=False) + "\n").encode()
        write_file(tmp, data, mode=REPORT_MODE, sync=False)  # as `write_mpr`
        os.replace(tmp, f"{prefix}.mpr")
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return [True, None, f"{stem}.mpr: cannot write report in {reports}: {_reason(e)}"]
    return [True, outcome, None]


def serve(reports: str, requests: Any, answers: Any) -> None:
    """Answer each request line with a result line until the input ends."""
    for line in requests:
        fds: dict[str, int] = {}
        try:
            results = [write_pair(reports, fds, job) for job in json.loads(line)]
        finally:
            for fd in fds.values():
                os.close(fd)
        answers.write(json.dumps(results).encode() + b"\n")
        answers.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: pair_writer.py REPORTS_DIR (started by the mailtee worker)", file=sys.stderr)
        return 2
    try:
        serve(argv[1], sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
