"""CLI start-up benchmark: `proxy-admin --help` and `proxy-admin search` as whole commands,
against `notmuch search` on the same messages, in the same run (issue 12 item 4).

    python bench/cli_startup.py [--work DIR] [--runs 30] [--warmup 3] [--limit 50]

WORK is what bench/ingest.py built: WORK/mailtee (a mailtee state dir) and, if present,
WORK/notmuch-config (notmuch over the same Maildir). Each command is run as a new process
`--runs` times after `--warmup` untimed runs (hyperfine-style: wall clock from spawn to
exit, output to a pipe that is drained); the search queries rotate through the classes of
bench/search.py (1 word, 3 words, phrase, from:, Japanese). `python -c pass` and
`python -c 'import typer'` are the floors (the interpreter; the interpreter plus typer,
which every command imports). `python -X importtime` gives the modules that dominate
start-up. Run it with another interpreter (e.g. a non-editable venv like the .deb's) to
measure that installation. Prints one JSON object; times are milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _common import emit, log, machine_info, percentile  # noqa: E402
from search import queries  # noqa: E402

PROXY_ADMIN = [sys.executable, "-c", "from admin.cli_fast import main; main()"]  # the script
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_runs(argvs: list[list[str]], env: dict[str, str], runs: int, warmup: int) -> dict:
    """Run the argvs round-robin: wall-clock ms per process (spawn to exit) and the CPU ms
    it used (user + system; far less distorted than wall time on a shared machine)."""
    for i in range(warmup):
        subprocess.run(argvs[i % len(argvs)], env=env, capture_output=True, check=False)
    ms: list[float] = []
    cpu: list[float] = []
    failures = 0
    for i in range(runs):
        argv = argvs[i % len(argvs)]
        c = _children_cpu()
        t = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        ms.append((time.perf_counter() - t) * 1000)
        cpu.append((_children_cpu() - c) * 1000)
        failures += proc.returncode != 0
    return {
        "runs": runs,
        "failures": failures,
        "mean_ms": round(statistics.mean(ms), 1),
        "stdev_ms": round(statistics.pstdev(ms), 1),
        "min_ms": round(min(ms), 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "max_ms": round(max(ms), 1),
        "cpu_p50_ms": round(percentile(cpu, 50), 1),
        "cpu_p95_ms": round(percentile(cpu, 95), 1),
    }


def import_profile(argv: list[str], env: dict[str, str], top: int = 12) -> dict:
    """`-X importtime` of one run: total import time, the top-level modules by cumulative
    time, and the single modules that cost most themselves."""
    proc = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            depth = (len(m.group(3)) - 1) // 2
            rows.append((m.group(4), int(m.group(1)), int(m.group(2)), depth))
    outer = [r for r in rows if r[3] == 0]
    return {
        "imports_ms": round(sum(r[2] for r in outer) / 1000, 1),
        "modules": len(rows),
        "top_level_cumulative_ms": {
            name: round(cum / 1000, 1)
            for name, _s, cum, _d in sorted(outer, key=lambda r: -r[2])[:top]
        },
        "top_self_ms": {
            name: round(own / 1000, 1)
            for name, own, _c, _d in sorted(rows, key=lambda r: -r[1])[:top]
        },
    }


#: The steps of `proxy-admin search` one after the other in a fresh interpreter, each
#: timed: where a whole-command run spends its time (ms, medians over the runs). A tree
#: from before the issue 12 start-up work (no admin.cli_lazy / admin.config_keys) is
#: measured along its own path: the whole command tree, pydantic, the config model.
PHASES = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
marks = {}
def mark(name):
    marks[name] = time.perf_counter()
config = Path(sys.argv[1])
import admin
here = Path(admin.__file__).parent
# (not try/import: a dev venv's editable finder would find the new modules in the checkout)
if (here / "cli_fast.py").exists():  # the console script's own search, without typer
    from admin.cli_fast import parse_search; mark("import admin.cli_fast")
    parse_search(["search", sys.argv[2]])
    from admin.config_keys import load_state_dir
    state = load_state_dir(config); mark("read state_dir (admin.config_keys, tomllib)")
else:
    import typer; mark("import typer")
    import admin.cli; mark("import admin.cli (the app, all groups)")
    if not (here / "cli_lazy.py").exists():
        typer.main.get_command(admin.cli.app); mark("build every command")
        import typer._adapters; mark("import pydantic via typer's option coercion")
        from admin.config import load_config, state_dir; mark("import admin.config (model)")
        state = state_dir(load_config(config), config); mark("load + validate config.toml")
    else:
        from admin.cli_lazy import lazy_command
        lazy_command(admin.cli.app).commands["search"]; mark("build root + search command")
        from admin.config_keys import load_state_dir
        state = load_state_dir(config); mark("read state_dir (admin.config_keys, tomllib)")
from archive.store import Archive; mark("import archive.store (catalog, index, tantivy)")
a = Archive(state); mark("open catalog + index")
hits, total = a.search_page(sys.argv[2], user=None, limit=50); mark("search (newest 50)")
a.catalog.audit("search", {"query": sys.argv[2], "user": None, "hits": len(hits)})
mark("audit row (committed)")
a.close(); mark("close")
prev, out = t0, {}
for name, at in marks.items():
    out[name] = (at - prev) * 1000
    prev = at
print(json.dumps(out))
"""


def phases(config: Path, env: dict[str, str], queries: list[str], runs: int) -> dict:
    samples: dict[str, list[float]] = {}
    for i in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", PHASES, str(config), queries[i % len(queries)]],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        for name, ms in json.loads(proc.stdout).items():
            samples.setdefault(name, []).append(ms)
    return {name: round(statistics.median(v), 1) for name, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mailtee-bench"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the checkout whose proxy-admin is measured (e.g. an older commit, unpacked "
        "with `git archive`), default: this one",
    )
    args = ap.parse_args()

    args.work = args.work.resolve()
    # `python -c` puts the working directory first on sys.path: measure the chosen tree.
    os.chdir(args.root.resolve())
    state = (args.work / "mailtee").resolve()
    if not (state / "archive").is_dir():
        sys.exit(f"{state}: no mailtee store; build one with bench/ingest.py --work {args.work}")
    conf_dir = args.work / "cli-config"
    conf_dir.mkdir(exist_ok=True)
    config = conf_dir / "config.toml"
    config.write_text(f'hostname = "bench.localdomain"\nstate_dir = "{state}"\n')
    env = {**os.environ, "PYTHONPATH": str(args.root.resolve()), "MAILTEE_CONFIG": str(config)}
    env.pop("JOURNAL_STREAM", None)
    # Measure what an installation runs: compiled bytecode (the .deb compiles it at
    # install; a PYTHONDONTWRITEBYTECODE environment would recompile every module of the
    # checkout on every start, ~20 ms for admin.cli alone).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "admin", "archive", "proxy"],
        cwd=args.root.resolve(), env=env, check=True,
    )  # fmt: skip

    qs = queries(max(5, args.runs // 5 + 1))
    rotation = [q for group in zip(*qs.values(), strict=True) for q in group]
    limit = str(args.limit)
    mailtee_search = [[*PROXY_ADMIN, "search", "--limit", limit, "--", q] for q in rotation]

    from archive.store import Archive

    archive = Archive(state)
    messages = archive.count()
    archive.close()

    result: dict = {
        "benchmark": "cli_startup",
        "messages": messages,
        "root": str(args.root),
        "machine": machine_info(),
        "loadavg_before": os.getloadavg()[0],
    }
    log(f"{messages} messages; python -c pass, proxy-admin --help, search ...")
    result["python_bare"] = timed_runs([[sys.executable, "-c", "pass"]], env, args.runs, 1)
    # the floor under every command: the interpreter plus typer (and its vendored click)
    result["python_import_typer"] = timed_runs(
        [[sys.executable, "-c", "import typer"]], env, args.runs, 1
    )
    result["help"] = timed_runs([[*PROXY_ADMIN, "--help"]], env, args.runs, args.warmup)
    result["search"] = timed_runs(mailtee_search, env, args.runs, args.warmup)
    result["search"]["queries"] = len(rotation)
    result["search_phases_ms"] = phases(config, env, rotation, max(5, args.runs // 4))
    result["importtime"] = {
        "help": import_profile([*PROXY_ADMIN, "--help"], env),
        "search": import_profile(mailtee_search[0], env),
    }

    nm_config = args.work / "notmuch-config"
    if nm_config.exists():
        nm_env = {**env, "NOTMUCH_CONFIG": str(nm_config.resolve())}
        nm = [
            ["notmuch", "search", "--sort=newest-first", f"--limit={limit}", "--output=messages", q]
            for q in rotation
        ]
        count = subprocess.run(
            ["notmuch", "count", "*"], env=nm_env, capture_output=True, text=True
        ).stdout.strip()
        result["notmuch_messages"] = int(count or 0)
        result["notmuch_search"] = timed_runs(nm, nm_env, args.runs, args.warmup)
        result["p95_ratio_mailtee_over_notmuch"] = round(
            result["search"]["p95_ms"] / max(result["notmuch_search"]["p95_ms"], 0.1), 2
        )
    result["targets"] = {
        "help_ms_max": 80,
        "search_p95_ms_max": 100,
        "help_met": result["help"]["p50_ms"] <= 80,
        "search_met": result["search"]["p95_ms"] <= 100,
    }
    result["loadavg_after"] = os.getloadavg()[0]
    emit(result)


if __name__ == "__main__":
    main()
