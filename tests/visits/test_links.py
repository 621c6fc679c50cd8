"""Links into a visit (decision 0021): the patient's join link arrives by e-mail (a real local SMTP
server), carries no health information, works once, for a short time, for that person and that
visit only, and opens a session good for that visit alone; a guest link binds to the first browser
that opens it, so a forwarded link lets nobody else in; the guest page asks a name and shows nothing
of the patient's record."""

from __future__ import annotations

import re
from email.message import Message

import httpx

from housecall.core import jobs
from housecall.identity.clock import clock
from housecall.scheduling import model as scheduling_model
from housecall.scheduling import service as scheduling
from housecall.visits import guests, join
from tests.clinic import Clinic
from tests.identity.conftest import CSRF
from tests.visits.conftest import (
    Booked,
    book,
    close_code,
    connect,
    make_guest_link,
    open_guest_link,
)

LINK = re.compile(r"https://testserver(/join/[A-Za-z0-9_-]+)")
GUEST_LINK = re.compile(r"https://testserver(/guest/[A-Za-z0-9_-]+)")


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode().replace("\r\n", "\n")


async def run_jobs(c: Clinic) -> None:
    """The job queue until nothing is due, as the worker would run it."""
    for _ in range(20):
        if not await jobs.work_once(c.env.db, settings=c.env.settings):
            return


async def post_form(browser: httpx.AsyncClient, page: str, path: str, data: dict[str, str]) -> httpx.Response:
    """Submit a form as a browser does: the CSRF token from the page it is on."""
    r = await browser.get(page)
    match = CSRF.search(r.text)
    assert match, (page, r.status_code, r.text[:300])
    return await browser.post(path, data={**data, "csrf": match.group(1)})


async def mailed_join_link(c: Clinic, appt: str, count: int = 1) -> str:
    """Staff press "Send join link"; the e-mail that arrives; returns the link's path."""
    r = await c.form_post("clinician", f"/visits/{appt}/join-link", {}, form_from=f"/visits/{appt}")
    assert r.status_code == 303 and r.headers["location"] == f"/visits/{appt}?joinsent=1"
    await run_jobs(c)
    mail = c.env.mail.wait_for(c.accounts["patient"].email, count)[-1]
    text = body(mail)
    assert "Your Housecall visit is ready to join:" in text
    # Nothing about the visit, the patient or the clinician: only the sentence and the link (whose
    # random token may spell anything, "Ana" included, so it is left out of the check).
    prose = LINK.sub("", text)
    for secret in ("Ana", "Reyes", "Carter", "Maya", "VT", appt):
        assert secret not in prose and secret not in str(mail["Subject"]), secret
    assert appt not in text
    found = LINK.search(text)
    assert found, text
    return found.group(1)


async def test_a_mailed_join_link_opens_the_visit_once_and_only_that_visit(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    link = await mailed_join_link(c, appt)
    other = await book(c)  # another visit of the same patient

    # Opened in a browser where nobody is signed in: a session for this visit alone starts.
    phone = c.env.client()
    r = await phone.get(link)
    assert r.status_code == 303 and r.headers["location"] == f"/visits/{appt}"
    assert phone.cookies.get(join.COOKIE)
    page = await phone.get(f"/visits/{appt}")
    assert page.status_code == 200 and 'action="/visits/' + appt + '/checkin"' in page.text
    r = await post_form(
        phone, f"/visits/{appt}", f"/visits/{appt}/checkin", {"state": "VT", "phone": "802-555-0100"}
    )
    assert r.status_code == 303, r.text[:300]
    # The same session reaches the visit's signaling as the patient …
    async with connect(live, appt, f"{join.COOKIE}={phone.cookies.get(join.COOKIE)}") as sock:
        hello = await sock.next("welcome")
        assert hello["role"] == "patient" and hello["admitted"] is False
    # … and nothing else: not the portal, not another visit, not the API.
    for path in ("/portal", f"/visits/{other}", "/portal/appointments"):
        r = await phone.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
    assert (await phone.get(f"/fhir/Patient/{c.patient}")).status_code == 401
    assert await close_code(live, other, f"{join.COOKIE}={phone.cookies.get(join.COOKIE)}") == 4401

    # Used once: the same link fails, in another browser and in the same one, with a way to sign in.
    for browser in (c.env.client(), phone):
        r = await browser.get(link)
        assert r.status_code == 410 and "used already" in r.text and 'href="/signin' in r.text


async def test_an_expired_join_link_fails(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    link = await mailed_join_link(c, appt)
    clock.advance(join.LIFETIME_US / 1_000_000 + 60)
    browser = c.env.client()
    r = await browser.get(link)
    assert r.status_code == 410 and "expired" in r.text and 'href="/signin' in r.text
    assert browser.cookies.get(join.COOKIE) is None
    assert (await browser.get(f"/visits/{appt}")).status_code == 303  # to sign in
    r = await c.env.client().get("/join/not-a-link")
    assert r.status_code == 404 and 'href="/signin' in r.text


async def test_someone_elses_join_link_fails_and_stays_unused(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    link = await mailed_join_link(c, appt)
    r = await c.browsers["clinician"].get(link)  # signed in as another person
    assert r.status_code == 404 and "someone else" in r.text
    # The patient, signed in, continues in their own session: no visit-only session is made.
    r = await c.browsers["patient"].get(link)
    assert r.status_code == 303 and r.headers["location"] == f"/visits/{appt}"
    assert c.browsers["patient"].cookies.get(join.COOKIE) is None
    assert (await c.browsers["patient"].get(link)).status_code == 410


async def test_join_links_go_out_shortly_before_a_booked_video_visit(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment  # starts in 5 minutes: the links are due now
    appointment = await c.read("Appointment", appt)
    start = join.instant_us(appointment["start"])
    async with c.env.db.transaction() as conn:
        assert await join.enqueue(conn, c.env.org_id, appt, start)
        assert await join.enqueue(conn, c.env.org_id, appt, start) is None  # once per visit and time
    await run_jobs(c)
    [mail] = c.env.mail.wait_for(c.accounts["patient"].email)
    link = LINK.search(body(mail))
    assert link
    # Valid at least until the booked end of the visit.
    async with c.env.db.reader() as conn:
        expires = await conn.fetchval("SELECT max(expires) FROM visit_join WHERE appointment_id = $1", appt)
    assert int(expires) >= join.instant_us(appointment["end"])
    r = await c.env.client().get(link.group(1))
    assert r.status_code == 303


async def test_booking_a_video_visit_queues_its_join_links_a_quarter_hour_before(booked: Booked) -> None:
    c = booked.clinic
    appt = await book(c, start_in=3 * 60)  # in three hours
    appointment = await c.read("Appointment", appt)
    visit = scheduling_model.visit_of(appointment)
    assert visit is not None and visit.mode == scheduling_model.VIDEO
    async with c.env.db.transaction() as conn:
        await scheduling.enqueue_reminders(conn, c.env.org_id, visit, c.env.settings)
    async with c.env.db.reader() as conn:
        run_at = await conn.fetchval(
            "SELECT run_at FROM job WHERE name = $1 AND dedupe_key = $2",
            join.SEND, f"join:{appt}:{visit.start_us}",
        )  # fmt: skip
    assert run_at == visit.start_us - join.LEAD_MINUTES * 60 * 1_000_000
    await run_jobs(c)
    assert c.env.mail.for_address(c.accounts["patient"].email) == []  # not due yet
    clock.advance(3 * 3600 - join.LEAD_MINUTES * 60 + 1)
    await run_jobs(c)
    mails = c.env.mail.wait_for(c.accounts["patient"].email, 2)  # the two-hour reminder, then the link
    assert [bool(LINK.search(body(m))) for m in mails] == [False, True]


# -- guests -----------------------------------------------------------------------------------------


async def test_a_forwarded_guest_link_lets_nobody_else_in(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    token = await make_guest_link(c, appt)
    first = c.env.client()
    cookie = await open_guest_link(c, token, first)
    # The same browser may open it again (a reload, a second click in the e-mail).
    assert (await first.get(f"/guest/{token}")).status_code == 303
    assert first.cookies.get(guests.COOKIE) == cookie.split("=", 1)[1]

    # Forwarded: a second browser is refused, and neither the link nor a made-up cookie opens the call.
    second = c.env.client()
    r = await second.get(f"/guest/{token}")
    assert r.status_code == 410 and "another device" in r.text
    assert second.cookies.get(guests.COOKIE) is None
    assert (await second.get(f"/visits/{appt}/guest")).status_code == 404
    assert await close_code(live, appt) == 4401
    assert await close_code(live, appt, f"{guests.COOKIE}={token}") == 4401
    async with connect(live, appt, cookie) as sock:
        assert (await sock.next("welcome"))["role"] == "guest"


async def test_a_guest_signed_in_to_their_own_portal_still_joins_as_the_guest(
    booked: Booked, live: str
) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    cousin = await c.env.account("patient", patient_id=c.other_patient)  # a patient of the clinic too
    browser = c.env.client()
    assert (await c.env.signin(browser, cousin.email, next="/portal")).status_code == 303
    session = f"__Host-hc_session={browser.cookies.get('__Host-hc_session')}"
    assert await close_code(live, appt, session) == 4404  # their session alone is not of this visit
    guest_cookie = await open_guest_link(c, await make_guest_link(c, appt, "Family member"), browser)
    async with connect(live, appt, f"{session}; {guest_cookie}") as sock:
        hello = await sock.next("welcome")
        assert hello["role"] == "guest" and hello["admitted"] is False


async def test_an_expired_guest_link_fails(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    token = await make_guest_link(c, appt)
    opened = await open_guest_link(c, await make_guest_link(c, appt))
    clock.advance(guests.LIFETIME_US / 1_000_000 + 60)
    r = await c.env.client().get(f"/guest/{token}")
    assert r.status_code == 410 and "expired" in r.text
    assert await close_code(live, appt, opened) == 4401  # a bound link ends too
    assert (await c.env.client().get("/guest/nothing-like-it")).status_code == 404


async def test_the_guest_page_asks_a_name_and_shows_nothing_of_the_record(booked: Booked, live: str) -> None:
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    guest = c.env.client()
    await open_guest_link(c, await make_guest_link(c, appt), guest)
    page = await guest.get(f"/visits/{appt}/guest")
    assert page.status_code == 200 and 'name="name"' in page.text and 'id="visit"' not in page.text
    r = await post_form(guest, f"/visits/{appt}/guest", f"/visits/{appt}/guest", {"name": "  "})
    assert r.status_code == 400 and 'id="name-error"' in r.text and 'aria-invalid="true"' in r.text
    r = await post_form(guest, f"/visits/{appt}/guest", f"/visits/{appt}/guest", {"name": "Rosa Díaz"})
    assert r.status_code == 303
    page = await guest.get(f"/visits/{appt}/guest")
    assert 'data-role="guest"' in page.text and "Rosa Díaz (Interpreter)" in page.text
    for secret in ("Ana", "Reyes", "802-555-0100", "Vermont"):
        assert secret not in page.text
    # No other page, no record, no API for the guest's browser.
    for path in (f"/visits/{appt}", "/portal", "/workspace/visits"):
        r = await guest.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
    assert (await guest.get(f"/fhir/Patient/{c.patient}")).status_code == 401
    # The clinician's lobby names the guest by name and label.
    async with connect(live, appt, f"{guests.COOKIE}={guest.cookies.get(guests.COOKIE)}") as sock, \
               connect(live, appt, f"__Host-hc_session={c.browsers['clinician'].cookies.get('__Host-hc_session')}") as doctor:  # fmt: skip
        await sock.next("welcome")
        lobby = await doctor.next("lobby")
        while not any(m["role"] == "guest" for m in lobby["members"]):
            lobby = await doctor.next("lobby")
        card = next(m for m in lobby["members"] if m["role"] == "guest")
        assert (
            card["name"] == "Rosa Díaz (Interpreter)" and card["admitted"] is False and card["state"] is None
        )


async def test_the_clinician_invites_a_guest_by_email(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    page = (await c.browsers["clinician"].get(f"/visits/{appt}")).text
    assert f'action="/visits/{appt}/guests"' in page and f'action="/visits/{appt}/join-link"' in page
    page = (await c.browsers["patient"].get(f"/visits/{appt}")).text
    assert "/guests" not in page and "/join-link" not in page
    r = await c.form_post("clinician", f"/visits/{appt}/guests", {"label": "family", "email": "not-an-address"},
                          form_from=f"/visits/{appt}")  # fmt: skip
    assert r.status_code == 400 and 'id="email-error"' in r.text and 'value="not-an-address"' in r.text
    r = await c.form_post("patient", f"/visits/{appt}/guests", {"label": "family"}, form_from="/account")
    assert r.status_code == 403  # only the visit's clinicians invite
    r = await c.form_post(
        "nurse", f"/visits/{appt}/guests", {"label": "family"}, form_from="/workspace/visits"
    )
    assert r.status_code == 404  # care team, but not the visit's clinician
    address = f"cousin-{c.env.org_id}@example.org"
    r = await c.form_post("clinician", f"/visits/{appt}/guests", {"label": "family", "email": address},
                          form_from=f"/visits/{appt}")  # fmt: skip
    assert r.status_code == 200 and "Family member" in r.text
    shown = GUEST_LINK.search(r.text)
    assert shown
    await run_jobs(c)
    [mail] = c.env.mail.wait_for(address)
    text = body(mail)
    assert GUEST_LINK.search(text).group(1) == shown.group(1)  # type: ignore[union-attr]
    for secret in ("Ana", "Reyes", "Carter", "Family"):
        assert secret not in text, secret
    r = await c.env.client().get(shown.group(1))
    assert r.status_code == 303 and r.headers["location"] == f"/visits/{appt}/guest"
