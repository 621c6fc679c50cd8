"""Reminders are scheduled jobs: they fire when the clock reaches them (the clock is moved, not
slept), and a visit that was cancelled or moved gets no stale reminder."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from housecall.identity.clock import clock
from tests.clinic import Clinic
from tests.scheduling.conftest import Calendar, local, run_worker
from tests.scheduling.test_booking import appointment_id, book

pytestmark = pytest.mark.usefixtures("worker_settings")


def until(moment: dt.datetime) -> float:
    """Seconds from the (test) clock's now to ``moment``."""
    return (moment - dt.datetime.fromtimestamp(clock.now(), dt.UTC)).total_seconds()


async def reminder_jobs(c: Clinic, appointment_id: str) -> list[str]:
    """The states of the appointment's reminder jobs (the queue is shared by every test's org)."""
    async with c.env.db.reader() as conn:
        rows = await conn.fetch(
            "SELECT state, args FROM job WHERE name = 'appointment.remind' ORDER BY run_at"
        )
    return [r[0] for r in rows if f'"{appointment_id}"' in r[1]]


def mails(c: Clinic) -> list[str]:
    """The appointment reminders mailed to the patient (a video visit's reminders to fill in its
    forms are tested in tests/visits/test_forms.py)."""
    return [
        text for text in (str(m.get_payload(decode=True).decode())
                          for m in c.env.mail.for_address(c.accounts["patient"].email))
        if "appointment coming up" in text
    ]  # fmt: skip


def wait_for_reminders(c: Clinic, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(mails(c)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(mails(c)) >= count, mails(c)
    return mails(c)


async def test_a_booked_visit_is_reminded_24_and_2_hours_before(cal: Calendar) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    start = local(cal.day, 10)
    await run_worker(c)
    assert await reminder_jobs(c, appt_id) == ["queued", "queued"]  # nothing is due yet
    clock.advance(until(start) - 25 * 3600)
    await run_worker(c)
    assert await reminder_jobs(c, appt_id) == ["queued", "queued"] and mails(c) == []
    clock.advance(3600 + 60)  # 23 h 59 min before: the 24-hour reminder is due
    await run_worker(c)
    assert await reminder_jobs(c, appt_id) == ["done", "queued"]
    got = wait_for_reminders(c, 1)
    assert len(got) == 1
    text = got[0]
    assert f"/portal/appointments/{appt_id}" in text
    assert "Carter" not in text and "Primary care" not in text  # no health information in the message
    clock.advance(22 * 3600)
    await run_worker(c)
    assert len(wait_for_reminders(c, 2)) == 2
    assert await reminder_jobs(c, appt_id) == ["done", "done"]


async def test_a_cancelled_visit_gets_no_reminder(cal: Calendar) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    r = await c.form_post("patient", f"/portal/appointments/{appt_id}/cancel", {},
                          form_from=f"/portal/appointments/{appt_id}")  # fmt: skip
    assert r.status_code == 303
    clock.advance(until(local(cal.day, 10)) - 60)
    await run_worker(c)
    assert await reminder_jobs(c, appt_id) == ["done", "done"]  # both jobs ran …
    assert mails(c) == []  # … and sent nothing


async def test_a_moved_visit_is_reminded_once_at_its_new_time_only(cal: Calendar) -> None:
    c = cal.c
    appt_id = appointment_id(await book(cal, cal.slots[0]))
    later = await cal.slot(local(cal.day + dt.timedelta(days=1), 10))
    r = await c.form_post("patient", f"/portal/appointments/{appt_id}/reschedule", {"slot": later},
                          form_from=f"/portal/appointments/{appt_id}/reschedule")  # fmt: skip
    assert r.status_code == 303
    # The old time's 24-hour reminder comes due first: it must not go out.
    clock.advance(until(local(cal.day, 10)) - 23 * 3600)
    await run_worker(c)
    assert await reminder_jobs(c, appt_id) == ["done", "queued", "queued", "queued"]
    assert mails(c) == []
    # The new time's 24-hour reminder does.
    clock.advance(24 * 3600)
    await run_worker(c)
    assert len(wait_for_reminders(c, 1)) == 1
