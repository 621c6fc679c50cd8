"""The identity layer's clock: one ``now()`` that tests can move, so expiry can be proved.

Session timeouts, token lifetimes and throttling windows all read ``clock.now_us()``; a test calls
``clock.advance(seconds)`` to jump forward and ``clock.reset()`` afterwards. Production never moves
it (the offset stays 0).
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        return time.time() + self.offset

    def now_us(self) -> int:
        return int(self.now() * 1_000_000)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def reset(self) -> None:
        self.offset = 0.0


clock = Clock()
