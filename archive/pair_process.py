"""The worker's end of the report writer process (archive.pair_writer).

`PairProcess.write(jobs)` sends one request line and waits for its answer line. The
process is started on first use and started again on the next request after it died:
a request it did not answer comes back as failed for every job (nothing is lost: the
jobs' pairs stay due in archive.commit, their bytes in memory and in the journal, and
the next pass, after the commit path's backoff, writes them again from the start).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from archive.children import child_env

log = logging.getLogger("mailtee.commit")

#: how long a stopping worker waits for the process to exit before killing it
STOP_TIMEOUT = 5.0
#: an answer line longer than this is not one (the process is broken): restart it
MAX_ANSWER = 64 * 1024 * 1024


class PairProcess:
    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = reports_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: trio.lowlevel.FdStream | None = None
        self._receive: trio.lowlevel.FdStream | None = None
        self._buffer = bytearray()
        #: how often it was started (tests, status)
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        """Fork+exec from the Trio thread itself (~1 ms, like the worker processes)."""
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        try:
            cmd = [sys.executable, "-m", "archive.pair_writer", os.fspath(self.reports_dir)]
            env = child_env()
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - see the docstring
                cmd, stdin=to_child, stdout=from_child, close_fds=True, env=env
            )
        finally:
            os.close(to_child)
            os.close(from_child)
        self._send = trio.lowlevel.FdStream(from_parent)
        self._receive = trio.lowlevel.FdStream(to_parent)
        self._buffer.clear()
        self.starts += 1

    async def write(self, jobs: list[list[Any]]) -> list[list[Any]]:
        """One `[eml_ok, mpr_written, error]` per job (see archive.pair_writer)."""
        if not jobs:
            return []
        if self._proc is None or self._proc.poll() is not None:
            await self._drop()
            self._start()
        assert self._send is not None and self._receive is not None
        try:
            await self._send.send_all(json.dumps(jobs).encode() + b"\n")
            while (end := self._buffer.find(b"\n")) < 0:
                if len(self._buffer) > MAX_ANSWER:
                    raise ValueError("answer too long")
                chunk = await self._receive.receive_some(1 << 16)
                if not chunk:
                    raise EOFError
                self._buffer += chunk
            answer = json.loads(self._buffer[:end])
            del self._buffer[: end + 1]
            if not isinstance(answer, list) or len(answer) != len(jobs):
                raise ValueError("answer does not match the request")
            return answer
        except (OSError, EOFError, ValueError, trio.BrokenResourceError) as e:
            code = self._proc.poll() if self._proc is not None else None
            why = f"exited ({code})" if code is not None else f"failed ({type(e).__name__})"
            log.error("the report writer process %s; starting it again", why)
            await self._drop()
            error = f"the report writer process {why}"
            return [[not job[5], None, f"{job[4]}: {error}"] for job in jobs]

    async def _drop(self) -> None:
        """Forget the process (killed if it still runs) and its pipes."""
        for stream in (self._send, self._receive):
            if stream is not None:
                await stream.aclose()
        self._send = self._receive = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            await trio.to_thread.run_sync(proc.wait)

    async def aclose(self) -> None:
        """End of input: the process finishes its request and exits."""
        if self._send is not None:
            await self._send.aclose()
            self._send = None
        proc = self._proc
        if proc is not None:
            with trio.move_on_after(STOP_TIMEOUT):
                await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
        await self._drop()
