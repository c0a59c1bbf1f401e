"""Login throttling per account and per client address (sliding window of failures).

After `max_failures` failed logins for one account, or from one client address, within
`window` seconds, further attempts for that key are refused without checking the
password until the oldest failure leaves the window; the page says how long to wait.
Keys are bounded in number (`MAX_KEYS`, oldest dropped) so a flood of made-up account
names cannot grow memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

MAX_KEYS = 50_000


class Throttle:
    def __init__(
        self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until an attempt for all `keys` is allowed again (0 = allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._fails.get(key)
                if not q:
                    continue
                while q and now - q[0] >= self.window:
                    q.popleft()
                if len(q) >= self.max_failures:
                    wait = max(wait, self.window - (now - q[0]))
        return wait

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                q = self._fails.setdefault(key, deque(maxlen=self.max_failures))
                q.append(now)
                self._fails.move_to_end(key)
            while len(self._fails) > MAX_KEYS:
                self._fails.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)
