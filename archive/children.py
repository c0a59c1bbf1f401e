"""The environment of the Python children mailtee starts: worker processes
(proxy.workers), pair writers (archive.pair_process) and the web side (web.supervisor).

Each child is started as `python -m PACKAGE.MODULE`. The code root (the directory that
holds the `proxy`, `archive`, `web` ... packages) comes first on its PYTHONPATH, so the
child imports the very code its parent runs: from a source tree, a test run or an
installed venv alike. Standard library only (`archive` is imported by every side).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: the directory holding mailtee's packages
CODE_ROOT = str(Path(__file__).resolve().parent.parent)


def child_env(drop: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without the `drop` names, with CODE_ROOT first on
    PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [CODE_ROOT, env.get("PYTHONPATH")]))
    return env
