"""The floor of a Python + Trio TCP relay: what any proxy of this design pays per message.

`python bench/relay_floor.py serve LISTEN_PORT TARGET_PORT WORKERS {trio,fast}` runs
WORKERS processes that accept on LISTEN_PORT (SO_REUSEPORT, like mailtee's workers),
open one upstream connection per client connection (like mailtee) and pump bytes both
ways with two tasks per connection and no parsing, no archive copy, no log line: the
least work a Trio relay can do for the same smtp-source dialogue.
- `trio`: `trio.SocketStream` + `trio.open_tcp_stream` (plain Trio),
- `fast`: proxy.fastsock's streams (what mailtee uses).
bench/smtp_relay.py runs it in the same run as mailtee (`--floor`), so "mailtee CPU per
message minus the floor's" is the part of the cost that mailtee's own work (SMTP core,
archive copy, group commit, reports, log) adds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECEIVE = 64 * 1024


def start(listen_port: int, target_port: int, workers: int, kind: str) -> subprocess.Popen[bytes]:
    """The floor relay as a process group leader (stop it with _common.stop)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "serve", str(listen_port)]
    cmd += [str(target_port), str(workers), kind]
    proc = subprocess.Popen(cmd, cwd=REPO)
    from _common import wait_port

    wait_port(listen_port)
    time.sleep(0.3 * workers)  # every worker bound (SO_REUSEPORT spreads only over those)
    return proc


def _serve(listen_port: int, target_port: int, kind: str) -> None:
    sys.path.insert(0, str(REPO))
    import trio

    from proxy import fastsock
    from proxy.ports import bind_reuseport

    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream, done: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(RECEIVE):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def handle(client: trio.abc.Stream) -> None:
        try:
            if kind == "fast":
                upstream = await fastsock.connect_tcp("127.0.0.1", target_port)
            else:
                upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream, nursery.cancel_scope)
            nursery.start_soon(pump, upstream, client, nursery.cancel_scope)
        await trio.aclose_forcefully(upstream)
        await trio.aclose_forcefully(client)

    async def main() -> None:
        socks = bind_reuseport("127.0.0.1", listen_port)
        for s in socks:
            s.listen(4096)
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
        async with trio.open_nursery() as nursery:
            if kind == "fast":
                await fastsock.serve_listeners(handle, listeners, handler_nursery=nursery)
            else:
                await trio.serve_listeners(handle, listeners, handler_nursery=nursery)

    trio.run(main)


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] != "serve" or argv[4] not in ("trio", "fast"):
        print(__doc__, file=sys.stderr)
        return 2
    listen_port, target_port, workers, kind = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    children = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            _serve(listen_port, target_port, kind)
            os._exit(0)
        children.append(pid)

    def stop(*_: object) -> None:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _serve(listen_port, target_port, kind)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main(sys.argv[1:]))
