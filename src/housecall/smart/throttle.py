"""Request limits of the token endpoints, per client and per IP address: 429 with Retry-After.

A sliding window in the process's memory. Token requests are cheap to answer but each one is a
guess at a secret, a code or a verifier; the limit bounds guessing without a database write per
request. Several processes each keep their own window, so the installation's bound is the limit
times the number of processes (decision 0008).
"""

from __future__ import annotations

import math
import time
from collections import deque


class Throttle:
    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float | None = None) -> int:
        """Count a request under ``key``; 0 when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now))
        hits.append(now)
        if len(self._hits) > 100_000:  # bound memory under a flood of distinct keys
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        return 0
