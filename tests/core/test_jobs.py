"""Durable background jobs on both engines: released only by a commit, run once, retried with
backoff, scheduled, deduplicated, taken over from a worker that died, and never run twice by
workers racing for them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from housecall.core import jobs
from housecall.core.db import Database, open_database
from housecall.identity.clock import clock

RAN: Counter[str] = Counter()
FAILURES: dict[str, int] = {}


@jobs.handler("test.record")
async def record(ctx: jobs.JobContext, args: dict[str, Any]) -> None:
    RAN[args["id"]] += 1


@jobs.handler("test.flaky")
async def flaky(ctx: jobs.JobContext, args: dict[str, Any]) -> None:
    left = FAILURES.get(args["id"], 0)
    if left:
        FAILURES[args["id"]] = left - 1
        raise ConnectionError(f"patient {args['id']} mail server away")  # the message must not be kept
    RAN[args["id"]] += 1


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    RAN.clear()
    FAILURES.clear()
    clock.reset()
    yield
    clock.reset()


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[Database]:
    database = open_database(fresh_database_url)
    await database.connect()
    yield database
    await database.close()


async def _enqueue(db: Database, name: str, **kw: Any) -> str | None:
    args = kw.pop("args")
    async with db.transaction() as conn:
        return await jobs.enqueue(conn, name, args, **kw)


async def _state(db: Database, job_id: str) -> tuple[str, int, str | None]:
    async with db.reader() as conn:
        row = await conn.fetchrow("SELECT state, attempts, error FROM job WHERE id = $1", job_id)
    assert row is not None
    return str(row[0]), int(row[1]), row[2]


async def test_a_job_exists_only_if_its_transaction_commits(db: Database) -> None:
    async def failing_request() -> None:
        async with db.transaction() as conn:
            await jobs.enqueue(conn, "test.record", {"id": "rolled-back"})
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        await failing_request()
    job_id = await _enqueue(db, "test.record", args={"id": "committed"})
    assert await jobs.work_once(db) == 1
    assert RAN == {"committed": 1}
    assert await _state(db, job_id or "") == ("done", 1, None)
    assert await jobs.work_once(db) == 0  # nothing runs twice


async def test_failures_are_retried_with_backoff_then_given_up(db: Database) -> None:
    FAILURES["a"] = 2
    job_id = await _enqueue(db, "test.flaky", args={"id": "a"}) or ""
    assert await jobs.work_once(db) == 1
    state = await _state(db, job_id)
    assert state == ("queued", 1, "ConnectionError")  # the type only: the message may hold PHI
    assert await jobs.work_once(db) == 0  # not before its backoff (2 s)
    clock.advance(jobs.backoff_seconds(1) + 0.1)
    assert await jobs.work_once(db) == 1
    clock.advance(jobs.backoff_seconds(2) + 0.1)
    assert await jobs.work_once(db) == 1
    assert RAN == {"a": 1}
    assert await _state(db, job_id) == ("done", 3, None)

    FAILURES["b"] = 99
    job_id = await _enqueue(db, "test.flaky", args={"id": "b"}, max_attempts=2) or ""
    await jobs.work_once(db)
    clock.advance(jobs.backoff_seconds(1) + 0.1)
    await jobs.work_once(db)
    assert await _state(db, job_id) == ("failed", 2, "ConnectionError")


async def test_scheduled_jobs_wait_for_their_time_and_keys_deduplicate(db: Database) -> None:
    at = clock.now_us() + 3600 * jobs.US
    first = await _enqueue(db, "test.record", args={"id": "reminder"}, run_at=at, key="reminder:visit-1:1h")
    again = await _enqueue(db, "test.record", args={"id": "reminder"}, run_at=at, key="reminder:visit-1:1h")
    assert first is not None and again is None
    assert await jobs.work_once(db) == 0
    clock.advance(3601)
    assert await jobs.work_once(db) == 1
    assert RAN == {"reminder": 1}


async def test_a_job_whose_worker_died_is_taken_over_after_its_lease(db: Database) -> None:
    await _enqueue(db, "test.record", args={"id": "orphan"})
    claimed = await jobs.claim(db)  # a worker takes it and dies before finishing
    assert [j.args for j in claimed] == [{"id": "orphan"}]
    assert await jobs.work_once(db) == 0  # its lease still holds
    clock.advance(jobs.LEASE_SECONDS + 1)
    assert await jobs.work_once(db) == 1
    assert RAN == {"orphan": 1}


async def test_racing_workers_run_each_job_once(db: Database) -> None:
    for n in range(60):
        await _enqueue(db, "test.record", args={"id": f"job-{n}"})

    async def worker() -> int:
        total = 0
        while ran := await jobs.work_once(db, limit=5):
            total += ran
        return total

    counts = await asyncio.gather(*(worker() for _ in range(4)))
    assert sum(counts) == 60
    assert {f"job-{n}": 1 for n in range(60)} == RAN


async def test_enqueueing_an_unknown_job_is_refused(db: Database) -> None:
    async with db.transaction() as conn:
        with pytest.raises(ValueError, match="no handler"):
            await jobs.enqueue(conn, "nobody.handles.this", {})


def test_the_worker_command_runs_what_is_due(fresh_database_url: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HOUSECALL_DATABASE_URL": fresh_database_url}
    done = subprocess.run([sys.executable, "-m", "housecall.cli", "worker", "--once"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1000:]
    assert "0 jobs run" in done.stdout
