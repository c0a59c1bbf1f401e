"""Server-side sessions: the browser holds a random token, the server only its SHA-256.

A session ends at logout, `idle` seconds after its last request, or `lifetime` seconds
after login, whichever comes first. Tokens are 256-bit `secrets.token_urlsafe` values;
the store keys sessions by the token's hash, so a memory dump or a debug print of the
store never yields a usable cookie. Each session has its own CSRF token, compared in
constant time on every POST. Sessions live in the web process's memory: a restart of
the web side logs everybody out, which is the safe direction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Beyond this many live sessions the oldest is dropped (memory bound).
MAX_SESSIONS = 10_000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    user: str
    role: str
    client: str
    created: float
    last_seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf.encode(), str(value).encode())

    @property
    def actor(self) -> str:
        return f"web:{self.user}"


class SessionStore:
    def __init__(
        self, lifetime: float, idle: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lifetime = lifetime
        self.idle = idle
        self.clock = clock
        self._by_hash: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, role: str, client: str) -> tuple[str, Session]:
        """A new session and the token for the cookie (returned once, never stored)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, role, client, now, now)
        with self._lock:
            self._expire(now)
            while len(self._by_hash) >= MAX_SESSIONS:
                oldest = min(self._by_hash, key=lambda k: self._by_hash[k].last_seen)
                del self._by_hash[oldest]
            self._by_hash[token_hash(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        key = token_hash(token)
        now = self.clock()
        with self._lock:
            session = self._by_hash.get(key)
            if session is None:
                return None
            if now - session.created > self.lifetime or now - session.last_seen > self.idle:
                del self._by_hash[key]
                return None
            session.last_seen = now
            return session

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_hash.pop(token_hash(token), None)

    def drop_user(self, user: str) -> None:
        with self._lock:
            for key in [k for k, s in self._by_hash.items() if s.user == user]:
                del self._by_hash[key]

    def __len__(self) -> int:
        return len(self._by_hash)

    def _expire(self, now: float) -> None:
        dead = [
            k
            for k, s in self._by_hash.items()
            if now - s.created > self.lifetime or now - s.last_seen > self.idle
        ]
        for k in dead:
            del self._by_hash[k]
