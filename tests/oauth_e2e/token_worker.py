"""One "worker process" for test_token_workers: a TokenManager of its own on the shared
token store, asking for tokens like sessions do until a deadline; prints one JSON line.

Run as `python token_worker.py CONFIG DEADLINE ACCOUNT[:PASSWORD] ...` (passwords on
argv are test-only local passwords of the fixture users).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import trio

from accounts.store import TokenStore
from accounts.tokens import TokenManager, TokenUnavailable
from admin.config import load_config, load_secrets
from admin.paths import secrets_path


async def main(config_path: Path, deadline: float, accounts: list[str]) -> dict:
    alerts: list[str] = []
    tm = TokenManager(
        load_config(config_path),
        load_secrets(config_path),
        TokenStore.beside(secrets_path(config_path)),
        alert=lambda kind, subject, text: alerts.append(subject),
    )
    seen: dict[str, list[str]] = {}
    errors: list[str] = []

    async def session(spec: str) -> None:
        name, _, password = spec.partition(":")
        while time.time() < deadline:
            try:
                tok = await tm.token(name, password or None)
            except TokenUnavailable as e:
                errors.append(f"{name}: {e.outcome}")
            else:
                got = seen.setdefault(name, [])
                if not got or got[-1] != tok.access_token:
                    got.append(tok.access_token)
            await trio.sleep(0.05)

    async with trio.open_nursery() as n:
        for spec in accounts:
            for _ in range(3):  # a few concurrent sessions per account
                n.start_soon(session, spec)
    return {"seen": seen, "errors": errors, "alerts": alerts, "requests": tm.requests}


if __name__ == "__main__":
    out = trio.run(main, Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
    print(json.dumps(out))
