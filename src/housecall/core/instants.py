"""FHIR ``instant`` text for microseconds since the epoch, in UTC, and HTTP dates.

Resources and audit events are stamped many times a second with the same second: the date and
time of a second is formatted once and cached, only the fraction is formatted each time (and
exactly, from the integer, where ``datetime.fromtimestamp(us / 1e6)`` could round up a whole
second)."""

from __future__ import annotations

import time
from email.utils import formatdate
from functools import lru_cache


@lru_cache(maxsize=64)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc_instant(us: int, digits: int = 3) -> str:
    """``2026-11-27T16:30:00.123Z`` (``digits`` of the fraction: 3 or 6)."""
    second, fraction = divmod(us, 1_000_000)
    if digits == 6:
        return f"{_second(second)}.{fraction:06d}Z"
    return f"{_second(second)}.{fraction // 1000:03d}Z"


@lru_cache(maxsize=1024)
def http_date(second: int) -> str:
    """The HTTP date of a second since the epoch (``Last-Modified``): ``Fri, 27 Nov 2026 16:30:00 GMT``."""
    return formatdate(second, usegmt=True)
