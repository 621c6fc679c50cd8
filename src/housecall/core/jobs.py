"""Durable background jobs: a queue in the database, worked by ``housecall worker`` or in-process.

- ``enqueue(conn, name, args, ...)`` writes a job in the caller's transaction: it exists only if
  that transaction commits, so a side effect (an e-mail, a reminder) is never released for a
  request that rolled back.
- Jobs have dotted names (``"visit.send_reminder"``) and take ids, never objects; handlers are
  registered with ``@handler(name)`` and must be idempotent: a job runs at least once.
- A worker claims due jobs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers in several
  processes never take the same job; SQLite has one writer) for a lease; a job whose worker died is
  claimed again when its lease runs out. A failure is retried with exponential backoff up to
  ``max_attempts``, then kept as ``failed`` with the error's type (never its message: it may hold
  health information).
- ``run_at`` schedules a job for later (reminders at a time); ``key`` makes enqueueing idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from housecall.core.db import Conn, Database
from housecall.core.settings import Settings, get_settings
from housecall.identity.clock import clock

log = logging.getLogger(__name__)

US = 1_000_000
LEASE_SECONDS = 300  # a job not finished by then is taken to have lost its worker
BACKOFF_CAP_SECONDS = 3600

Handler = Callable[["JobContext", dict[str, Any]], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register the handler of the jobs called ``name``."""

    def register(fn: Handler) -> Handler:
        if name in HANDLERS and HANDLERS[name] is not fn:
            raise ValueError(f"a handler for {name!r} is registered already")
        HANDLERS[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    args: dict[str, Any]
    attempts: int
    max_attempts: int


@dataclass(frozen=True)
class JobContext:
    db: Database
    job: Job
    # The configuration of the process running the job (the server's own in-process worker, or
    # `housecall worker`'s environment): SMTP, public address … handlers read it from here.
    settings: Settings


def backoff_seconds(attempts: int) -> int:
    """Seconds before retrying a job that has failed ``attempts`` times: 2, 4, 8 … capped."""
    return int(min(BACKOFF_CAP_SECONDS, 2**attempts))


async def enqueue(
    conn: Conn,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    run_at: int | None = None,
    key: str | None = None,
    max_attempts: int = 8,
) -> str | None:
    """Queue a job in the caller's transaction; returns its id, or None when a job with the same
    ``key`` is queued already (enqueueing is then a no-op)."""
    if name not in HANDLERS:
        raise ValueError(f"no handler for job {name!r}")
    now = clock.now_us()
    if key is not None and await conn.fetchval("SELECT 1 FROM job WHERE dedupe_key = $1", key):
        return None
    job_id = secrets.token_hex(16)
    await conn.execute(
        "INSERT INTO job (id, name, args, state, run_at, attempts, max_attempts, locked_until, dedupe_key, "
        "error, created, finished) VALUES ($1, $2, $3, 'queued', $4, 0, $5, NULL, $6, NULL, $7, NULL)",
        job_id, name, orjson.dumps(args or {}).decode(), run_at if run_at is not None else now, max_attempts,
        key, now,
    )  # fmt: skip
    return job_id


_DUE = "(state = 'queued' AND run_at <= $1) OR (state = 'running' AND locked_until < $1)"


async def claim(db: Database, limit: int = 10) -> list[Job]:
    """Take up to ``limit`` due jobs (and jobs whose worker's lease ran out) for this worker."""
    now = clock.now_us()
    async with db.reader() as conn:  # an idle queue costs a read, not a write lock, per poll
        if not await conn.fetchval(f"SELECT 1 FROM job WHERE {_DUE} LIMIT 1", now):
            return []
    async with db.transaction() as conn:
        lock = " FOR UPDATE SKIP LOCKED" if conn.dialect == "postgresql" else ""
        rows = await conn.fetch(
            f"SELECT id, name, args, attempts, max_attempts FROM job WHERE {_DUE} ORDER BY run_at LIMIT $2{lock}",
            now,
            limit,
        )
        for row in rows:
            await conn.execute(
                "UPDATE job SET state = 'running', attempts = attempts + 1, locked_until = $1 WHERE id = $2",
                now + LEASE_SECONDS * US,
                row[0],
            )
    return [Job(r[0], r[1], orjson.loads(r[2]), int(r[3]) + 1, int(r[4])) for r in rows]


async def run_one(db: Database, job: Job, settings: Settings | None = None) -> bool:
    """Run a claimed job and record how it ended; True when it succeeded."""
    fn = HANDLERS.get(job.name)
    error: str | None = None
    try:
        if fn is None:
            raise LookupError(f"no handler for {job.name}")
        await fn(JobContext(db, job, settings or get_settings()), job.args)
    except Exception as exc:
        error = type(exc).__name__
        log.warning("job %s (%s) failed on attempt %d: %s", job.id, job.name, job.attempts, error)
    now = clock.now_us()
    async with db.transaction() as conn:
        if error is None:
            await conn.execute(
                "UPDATE job SET state = 'done', finished = $1, error = NULL WHERE id = $2", now, job.id
            )
        elif job.attempts >= job.max_attempts:
            await conn.execute(
                "UPDATE job SET state = 'failed', finished = $1, error = $2 WHERE id = $3", now, error, job.id
            )
        else:
            await conn.execute(
                "UPDATE job SET state = 'queued', run_at = $1, locked_until = NULL, error = $2 WHERE id = $3",
                now + backoff_seconds(job.attempts) * US, error, job.id,
            )  # fmt: skip
    return error is None


async def work_once(db: Database, limit: int = 10, settings: Settings | None = None) -> int:
    """Claim and run what is due now; returns how many jobs ran."""
    jobs = await claim(db, limit)
    for job in jobs:
        await run_one(db, job, settings)
    return len(jobs)


async def work_forever(
    db: Database,
    *,
    idle_seconds: float = 1.0,
    stop: asyncio.Event | None = None,
    settings: Settings | None = None,
) -> None:
    """The worker loop: run due jobs, sleep ``idle_seconds`` when there are none."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            ran = await work_once(db, settings=settings)
        except Exception:  # a database that is away: try again later
            log.exception("the job worker could not claim jobs")
            ran = 0
        if not ran:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), idle_seconds)
