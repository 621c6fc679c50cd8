"""Sign-in throttling that holds across processes (SECURITY.md row 14).

A sliding one-hour window of failed attempts per account (keyed by the e-mail typed, so unknown
and known addresses behave the same) and per client address. An attempt first *reserves* a
failure row under a lock on its key, then checks the password outside the transaction, and gives
the row back only when the attempt succeeds; so even concurrent guesses from many processes cannot
exceed the limit.
"""

from __future__ import annotations

import hashlib
import math

from housecall.core.db import Conn

WINDOW_US = 3600 * 1_000_000


def account_key(email: str) -> str:
    return "acct:" + hashlib.sha256(email.encode()).hexdigest()[:40]


def ip_key(address: str) -> str:
    return "ip:" + address[:64]


async def retry_after(conn: Conn, key: str, limit: int, now_us: int) -> int | None:
    """Seconds until one more failure is allowed for ``key``; None when allowed now."""
    since = now_us - WINDOW_US
    count = int(
        await conn.fetchval("SELECT count(*) FROM signin_failure WHERE key = $1 AND at > $2", key, since)
    )
    if count < limit:
        return None
    # The failure that must leave the window before the count drops below the limit.
    at = await conn.fetchval(
        "SELECT at FROM signin_failure WHERE key = $1 AND at > $2 ORDER BY at LIMIT 1 OFFSET $3",
        key,
        since,
        count - limit,
    )
    return max(1, math.ceil((int(at) + WINDOW_US - now_us) / 1_000_000))


async def reserve(conn: Conn, limits: dict[str, int], now_us: int) -> tuple[int | None, list[int]]:
    """Inside a transaction: (retry_after, []) when any key is over its limit, else (None, ids of
    the failure rows reserved for this attempt; ``release`` them when the attempt succeeds)."""
    if conn.dialect == "postgresql":  # SQLite's single writer already serializes this
        for key in sorted(limits):
            await conn.fetchval("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "signin:" + key)
    worst: int | None = None
    for key, limit in limits.items():
        wait = await retry_after(conn, key, limit, now_us)
        if wait is not None:
            worst = max(worst or 0, wait)
    if worst is not None:
        return worst, []
    ids = []
    for key in limits:
        await conn.execute("DELETE FROM signin_failure WHERE key = $1 AND at <= $2", key, now_us - WINDOW_US)
        ids.append(
            int(
                await conn.fetchval(
                    "INSERT INTO signin_failure (key, at) VALUES ($1, $2) RETURNING id", key, now_us
                )
            )
        )
    return None, ids


async def release(conn: Conn, ids: list[int]) -> None:
    for row_id in ids:
        await conn.execute("DELETE FROM signin_failure WHERE id = $1", row_id)


async def failures(conn: Conn, key: str, now_us: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM signin_failure WHERE key = $1 AND at > $2", key, now_us - WINDOW_US
        )
    )
