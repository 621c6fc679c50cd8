"""A worker killed in the middle of a notification (a real ``housecall worker`` process, SIGKILL)
leaves it to be finished after a restart, and each effect happens once: the text message written
before the kill is not written again, and the e-mail whose SMTP exchange was cut is sent once."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

from housecall.core import jobs
from housecall.core.db import Database, open_database
from housecall.fhir import interactions as ix
from housecall.identity import service as identity
from housecall.notify import Kind, send
from housecall.notify import service as notify
from tests.identity.conftest import PASSWORD, settings_for_tests
from tests.notify.conftest import PUBLIC_URL, GatedMailbox

PHONE = "+15550100123"


def worker_env(database_url: str, smtp_port: int) -> dict[str, str]:
    return {**os.environ, "HOUSECALL_DATABASE_URL": database_url, "HOUSECALL_SMTP_HOST": "127.0.0.1",
            "HOUSECALL_SMTP_PORT": str(smtp_port), "HOUSECALL_PUBLIC_URL": PUBLIC_URL}  # fmt: skip


async def worker_once(env: dict[str, str]) -> str:
    """``housecall worker --once`` in its own process; returns what it printed."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "housecall.cli", "worker", "--once"], env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def state(db: Database) -> dict[str, object]:
    async with db.reader() as conn:
        job = await conn.fetchrow("SELECT state, attempts FROM job WHERE name = $1", notify.DELIVER)
        rows = await conn.fetch("SELECT channel, status, attempts FROM notification ORDER BY channel")
        outbox = await conn.fetch("SELECT channel, address FROM notification_outbox")
    assert job is not None
    return {"job": tuple(job), "deliveries": [tuple(r) for r in rows], "outbox": [tuple(r) for r in outbox]}


async def test_a_worker_killed_mid_job_finishes_it_after_a_restart_and_each_effect_happens_once(
    fresh_database_url: str, gated_smtp: tuple[GatedMailbox, int], tmp_path: Path
) -> None:
    box, port = gated_smtp
    email = f"crash-{secrets.token_hex(4)}@example.org"  # the server is shared by both engines' runs
    settings = settings_for_tests(fresh_database_url, port)
    db = open_database(fresh_database_url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            await identity.create_organization(conn, "crash-clinic", "Crash Clinic", settings=settings)
        async with db.transaction() as conn:
            ctx = identity._ctx(conn, settings, "crash-clinic")
            patient = (
                await ix.create(ctx, "Patient", {"resourceType": "Patient", "name": [{"family": "K"}]})
            ).stored
            assert patient is not None
            account = await identity.create_account(conn, "crash-clinic", email, "patient", PASSWORD,
                                                    patient_id=patient.res_id, settings=settings)  # fmt: skip
            await notify.save_preferences(
                conn, account.id, notify.Preferences(email=True, sms=True, phone=PHONE)
            )
            await send(conn, "crash-clinic", account.id, Kind.NEW_MESSAGE, "/messages/m1")

        # The mail server will hold the worker's SMTP exchange after MAIL FROM (before any message
        # is handed over), as a slow or stalled server does; the worker is killed right there.
        box.held.clear()
        box.released.clear()
        box.hold.set()
        env = worker_env(fresh_database_url, port)
        with (tmp_path / "worker.log").open("w") as log:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "housecall.cli", "worker", env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                await asyncio.to_thread(box.held.wait, 60)
                assert box.held.is_set(), (tmp_path / "worker.log").read_text()[-2000:]
                mid_job = await state(db)
                worker.kill()  # SIGKILL: no cleanup, no "finally"
                await worker.wait()
            finally:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
                box.hold.clear()
                box.released.set()

        # Killed mid-job: the text message was written (its own commit), the e-mail was claimed but
        # never handed over, and the job is still leased to the dead worker.
        assert mid_job == {
            "job": ("running", 1),
            "deliveries": [("email", "sending", 1), ("sms", "sent", 1)],
            "outbox": [("sms", PHONE)],
        }
        assert box.for_address(email) == []

        # Restarted at once: the dead worker's lease (five minutes) still holds the job.
        assert "0 jobs run" in await worker_once(env)
        # Five minutes pass (taken off the stored times rather than waited for): the lease runs out.
        async with db.transaction() as conn:
            later = (jobs.LEASE_SECONDS + 1) * jobs.US
            await conn.execute(
                "UPDATE job SET locked_until = locked_until - $1 WHERE state = 'running'", later
            )
            await conn.execute(
                "UPDATE notification SET claimed = claimed - $1 WHERE status = 'sending'", later
            )
        assert "1 jobs run" in await worker_once(env)

        assert await state(db) == {
            "job": ("done", 2),
            "deliveries": [("email", "sent", 2), ("sms", "sent", 1)],
            "outbox": [("sms", PHONE)],  # not written again
        }
        [mail] = box.wait_for(email)  # sent once
        assert f"{PUBLIC_URL}/messages/m1" in (mail.get_payload(decode=True) or b"").decode()  # type: ignore[union-attr]
        assert "0 jobs run" in await worker_once(env)
        assert len(box.for_address(email)) == 1
    finally:
        await db.close()
