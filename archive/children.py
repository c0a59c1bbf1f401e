"""The environment of the Python children mailtee starts: worker processes
(proxy.workers), pair writers (archive.pair_process) and the web side (web.supervisor).

Each child is started as `python -m PACKAGE.MODULE`. The code root (the directory that
holds the `proxy`, `archive`, `web` ... packages) comes first on its PYTHONPATH, so the
child imports the very code its parent runs: from a source tree, a test run or an
installed venv alike. `stop_children()` is how a stopping parent ends them: SIGTERM,
a grace period, then SIGKILL. Standard library only at import (`archive` is imported by
every side; Trio is imported by `stop_children` when it runs).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: the directory holding mailtee's packages
CODE_ROOT = str(Path(__file__).resolve().parent.parent)


def child_env(drop: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without the `drop` names, with CODE_ROOT first on
    PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [CODE_ROOT, env.get("PYTHONPATH")]))
    return env


async def stop_children(procs: Sequence[subprocess.Popen[Any]], grace: float) -> None:
    """SIGTERM each of `procs` still running, wait up to `grace` seconds for them all, then
    SIGKILL (and reap) whatever is left. Runs in the caller's cancel scope: a caller
    that is itself being cancelled shields it."""
    import trio

    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    with trio.move_on_after(grace):
        for p in running:
            await trio.to_thread.run_sync(p.wait, abandon_on_cancel=True)
    for p in running:
        if p.poll() is None:
            p.kill()
            p.wait()
