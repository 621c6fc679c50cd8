"""Forms sent ahead of a video visit: the intake questionnaire (with a conditional question) and the
telehealth consent, filled in on server-rendered pages, stored as QuestionnaireResponse (and a
Consent), shown to the clinician before the visit, and reminded by scheduled jobs only while they
are missing (the clock is moved, never slept)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from housecall.identity.clock import clock
from housecall.visits import forms
from tests.clinic import Clinic, text_of, told  # noqa: F401
from tests.scheduling.conftest import Calendar, cal, local, run_worker, worker_settings  # noqa: F401
from tests.scheduling.test_booking import appointment_id, book

pytestmark = pytest.mark.usefixtures("worker_settings")


async def booked(cal: Calendar) -> str:  # noqa: F811
    return appointment_id(await book(cal, cal.slots[0]))


def forms_page(appt: str, form: str = "") -> str:
    return f"/portal/appointments/{appt}/forms" + (f"/{form}" if form else "")


async def fill(c: Clinic, appt: str, form: str, answers: dict[str, str]) -> httpx.Response:
    return await c.form_post("patient", forms_page(appt, form), answers, form_from=forms_page(appt, form))


async def test_after_booking_a_video_visit_the_patient_is_asked_for_the_forms(cal: Calendar) -> None:  # noqa: F811
    c = cal.c
    appt = await booked(cal)
    urls = {q["url"] for q in await c.search("Questionnaire", [])}
    assert {forms.INTAKE_URL, forms.CONSENT_URL} <= urls  # seeded for the organization
    intake = next(q for q in await c.search("Questionnaire", [("url", forms.INTAKE_URL)]))
    where = next(i for i in intake["item"] if i["linkId"] == "pain-where")
    assert where["enableWhen"] == [{"question": "pain", "operator": "=", "answerBoolean": True}]
    home = text_of((await c.browsers["patient"].get("/portal")).text)
    assert "Forms to complete before your visit on" in home and "Fill in the forms" in home
    listing = text_of((await c.browsers["patient"].get(forms_page(appt))).text)
    assert "Before your visit · To do" in listing and "Consent to telehealth · To do" in listing
    page = text_of((await c.browsers["patient"].get(f"/portal/appointments/{appt}")).text)
    assert "Forms to complete before your visit" in page and "How to join a video visit" in page
    visit = text_of((await c.browsers["patient"].get(f"/visits/{appt}")).text)
    assert "Forms to complete before your visit" in visit
    # An in-person visit has no forms.
    from tests.scheduling.conftest import AMB

    in_person = appointment_id(await book(cal, await cal.slot(local(cal.day, 11), mode=AMB)))
    none = text_of((await c.browsers["patient"].get(forms_page(in_person))).text)
    assert "There are no forms to fill in for this appointment." in none


async def test_the_intake_is_checked_on_the_server_with_its_conditional_questions(cal: Calendar) -> None:  # noqa: F811
    c = cal.c
    appt = await booked(cal)
    page = (await c.browsers["patient"].get(forms_page(appt, "intake"))).text
    assert 'data-when="pain"' in page and "Answer only if you said “Yes” to: Do you have pain?" in text_of(
        page
    )
    # Nothing answered: each required question says so beside its field.
    r = await fill(c, appt, "intake", {"q-reason": "", "q-pain-where": "knee"})
    assert r.status_code == 400
    assert r.text.count("Answer this question: Do you have pain?") == 2  # in the summary and beside the field
    assert 'href="#q-reason"' in r.text and 'id="q-pain-error"' in r.text
    assert 'value="knee"' in r.text  # what was typed is kept
    # Pain: yes, so where and how bad are now required, and the score is checked against 0 to 10.
    r = await fill(
        c, appt, "intake", {"q-reason": "Cough for a week", "q-pain": "true", "q-pain-score": "11"}
    )
    assert r.status_code == 400
    assert 'id="q-pain-where-error"' in r.text and "Enter a whole number from 0 to 10." in text_of(r.text)
    assert "Cough for a week</textarea>" in r.text and 'value="true" checked' in r.text
    # Pain: no. Where it hurts does not apply and is not kept, whatever was typed.
    r = await fill(c, appt, "intake", {"q-reason": "Cough", "q-pain": "false", "q-pain-where": "knee"})
    assert r.status_code == 303 and r.headers["location"] == forms_page(appt) + "?done=1"
    (qr,) = await c.search("QuestionnaireResponse", [("subject", f"Patient/{c.patient}")])
    assert [i["linkId"] for i in qr["item"]] == ["reason", "pain"]
    # Answered again: the same response is replaced, with the conditional answers.
    r = await fill(c, appt, "intake", {"q-reason": "Cough", "q-pain": "true", "q-pain-where": "Lower back",
                                       "q-pain-score": "6"})  # fmt: skip
    assert r.status_code == 303
    (qr,) = await c.search("QuestionnaireResponse", [("subject", f"Patient/{c.patient}")])
    assert qr["status"] == "completed" and qr["questionnaire"] == forms.INTAKE_URL + "|1"
    assert qr["identifier"] == {"system": forms.FORMS_SYSTEM, "value": f"{appt}/intake"}
    assert qr["extension"] == [
        {"url": forms.APPOINTMENT_EXT, "valueReference": {"reference": f"Appointment/{appt}"}}
    ]
    assert qr["subject"] == {"reference": f"Patient/{c.patient}"}
    answers = {i["linkId"]: i["answer"][0] for i in qr["item"]}
    assert answers == {"reason": {"valueString": "Cough"}, "pain": {"valueBoolean": True},
                       "pain-where": {"valueString": "Lower back"}, "pain-score": {"valueInteger": 6}}  # fmt: skip
    again = (await c.browsers["patient"].get(forms_page(appt, "intake"))).text
    assert 'value="Lower back"' in again  # the answers given are shown to change


async def test_consent_is_recorded_and_the_clinician_sees_the_answers_before_the_visit(
    cal: Calendar,  # noqa: F811
) -> None:
    c = cal.c
    appt = await booked(cal)
    r = await fill(c, appt, "consent", {"q-agree": "false"})
    assert r.status_code == 400 and "you need to agree" in text_of(r.text)
    assert await c.search("Consent", [("patient", f"Patient/{c.patient}")]) == []
    assert (await fill(c, appt, "consent", {"q-agree": "true"})).status_code == 303
    (consent,) = await c.search("Consent", [("patient", f"Patient/{c.patient}")])
    assert consent["status"] == "active" and consent["scope"]["coding"][0]["code"] == "treatment"
    assert {"system": forms.CONSENT_CATEGORY, "code": "telehealth", "display": "Telehealth"} in [
        cat["coding"][0] for cat in consent["category"]]  # fmt: skip
    assert consent["sourceReference"]["reference"].startswith("QuestionnaireResponse/")
    assert "actor" not in consent["provision"]  # grants nobody any access (decision 0010)
    # Before answering the intake the clinician sees what is missing …
    intake = text_of((await c.browsers["clinician"].get(f"/visits/{appt}/intake")).text)
    assert "Before your visit · Not done yet" in intake and "Consent to telehealth · Done" in intake
    await fill(c, appt, "intake", {"q-reason": "Rash on my arm", "q-pain": "true", "q-pain-where": "Left arm",
                                   "q-pain-score": "3"})  # fmt: skip
    # … then the answers, in the clinician's view of the visit.
    intake = text_of((await c.browsers["clinician"].get(f"/visits/{appt}/intake")).text)
    assert "Do you have pain? Yes" in intake and "Where is the pain? Left arm" in intake
    assert "How bad is the pain, from 0 (none) to 10 (the worst)? 3" in intake
    visit = (await c.browsers["clinician"].get(f"/visits/{appt}")).text
    assert f'href="/visits/{appt}/intake"' in visit and "2 of 2 forms done" in text_of(visit)
    # The patient's list says done; the home page no longer asks.
    listing = text_of((await c.browsers["patient"].get(forms_page(appt))).text)
    assert "Before your visit · Done" in listing and "Consent to telehealth · Done" in listing
    assert "Forms to complete" not in text_of((await c.browsers["patient"].get("/portal")).text)
    # The answers are the care team's and the patient's only: another patient cannot open the forms,
    # and the patient has no intake page of the clinician.
    assert (await c.browsers["patient"].get(f"/visits/{appt}/intake")).status_code == 404


async def test_an_organization_intake_for_the_kind_of_visit_is_used_instead(cal: Calendar) -> None:  # noqa: F811
    c = cal.c
    await c.create({"resourceType": "Questionnaire", "url": "https://clinic.example/q/primary", "status": "active",
                    "title": "Primary care questions",
                    "useContext": [{"code": {"system": forms.USAGE_CONTEXT, "code": "focus"},
                                    "valueCodeableConcept": {"text": "Primary care visit"}}],
                    "item": [{"linkId": "smoke", "text": "Do you smoke?", "type": "boolean", "required": True}]})  # fmt: skip
    appt = await booked(cal)
    listing = text_of((await c.browsers["patient"].get(forms_page(appt))).text)
    assert "Primary care questions · To do" in listing and "Before your visit" not in listing
    assert (await fill(c, appt, "intake", {"q-smoke": "false"})).status_code == 303


async def test_the_forms_page_is_in_spanish_for_a_spanish_reader(cal: Calendar) -> None:  # noqa: F811
    c = cal.c
    appt = await booked(cal)
    c.browsers["patient"].cookies.set("hc_lang", "es")
    page = text_of((await c.browsers["patient"].get(forms_page(appt, "intake"))).text)
    assert "¿Tiene dolor?" in page and "Guardar mis respuestas" in page


async def test_the_join_help_is_public_and_links_the_technology_check() -> None:
    from housecall.web.policy import ROUTES, Policy

    assert ROUTES["/help/visits"] is Policy.PUBLIC


async def test_reminders_go_48_and_24_hours_before_only_while_forms_are_missing(
    cal: Calendar,  # noqa: F811
    told: list[tuple[str, str, str]],  # noqa: F811
) -> None:
    c = cal.c
    appt = await booked(cal)
    start = local(cal.day, 10)

    def until(moment: dt.datetime) -> float:
        return (moment - dt.datetime.fromtimestamp(clock.now(), dt.UTC)).total_seconds()

    def forms_due() -> list[str]:
        # (the job queue is shared by every test's organization: only this visit's count)
        return [path for _a, kind, path in told if kind == "forms_due" and appt in path]

    clock.advance(until(start) - 49 * 3600)
    await run_worker(c)
    assert forms_due() == []  # nothing is due yet
    clock.advance(3600 + 60)  # 47 h 59 min before: the 48-hour reminder is due
    await run_worker(c)
    assert forms_due() == [forms_page(appt)]
    mail = c.env.mail.wait_for(c.accounts["patient"].email, 1)
    body = next(
        str(m.get_payload(decode=True).decode()) for m in mail if "forms" in str(m["Subject"]).lower()
    )
    assert forms_page(appt) in body and "Carter" not in body and "Primary care" not in body
    # The patient signs in again (a day has passed) and fills both forms; the 24-hour reminder then
    # sends nothing.
    browser = c.env.client()
    assert (await c.env.signin(browser, c.accounts["patient"].email, next="/portal")).status_code == 303
    c.browsers["patient"] = browser
    assert (await fill(c, appt, "intake", {"q-reason": "Check-up", "q-pain": "false"})).status_code == 303
    assert (await fill(c, appt, "consent", {"q-agree": "true"})).status_code == 303
    clock.advance(24 * 3600)
    await run_worker(c)
    assert forms_due() == [forms_page(appt)]
    async with c.env.db.reader() as conn:
        rows = await conn.fetch("SELECT state, args FROM job WHERE name = 'visit.forms.remind'")
    assert [r[0] for r in rows if appt in r[1]] == ["done", "done"]  # the 24-hour job ran, and sent nothing


async def test_a_cancelled_visit_gets_no_forms_reminder(
    cal: Calendar,  # noqa: F811
    told: list[tuple[str, str, str]],  # noqa: F811
) -> None:
    c = cal.c
    appt = await booked(cal)
    r = await c.form_post("patient", f"/portal/appointments/{appt}/cancel", {},
                          form_from=f"/portal/appointments/{appt}")  # fmt: skip
    assert r.status_code == 303
    clock.advance((local(cal.day, 10) - dt.datetime.fromtimestamp(clock.now(), dt.UTC)).total_seconds() - 60)
    await run_worker(c)
    assert [k for _a, k, p in told if k == "forms_due" and appt in p] == []


async def test_a_proxy_fills_in_the_forms_for_the_patient(cal: Calendar) -> None:  # noqa: F811
    from housecall.identity import service

    c = cal.c
    appt = await booked(cal)
    proxy = await c.env.account("proxy")
    async with c.env.db.transaction() as conn:
        await service.grant_proxy(conn, proxy.id, c.patient, granted_by="system:test", relationship="parent",
                                  settings=c.env.settings)  # fmt: skip
    browser = c.env.client()
    await c.env.signin(browser, proxy.email, next="/portal")
    c.browsers["proxy"] = browser
    r = await c.form_post("proxy", "/account/acting-for", {"patient": c.patient, "next": "/portal"},
                          form_from="/portal/choose")  # fmt: skip
    assert r.status_code == 303
    assert "Forms to complete before your visit" in text_of((await browser.get("/portal")).text)
    r = await c.form_post("proxy", forms_page(appt, "intake"), {"q-reason": "Fever", "q-pain": "false"},
                          form_from=forms_page(appt, "intake"))  # fmt: skip
    assert r.status_code == 303
    (qr,) = await c.search("QuestionnaireResponse", [("subject", f"Patient/{c.patient}")])
    assert qr["subject"] == {"reference": f"Patient/{c.patient}"}
    assert qr["author"]["reference"].split("/")[0] in ("RelatedPerson", "Patient")
    # Another patient's visit is not theirs to fill in (nor the patient's), and says nothing of it.
    mine = await c.read("Appointment", appt)
    other = await c.create({k: v for k, v in mine.items() if k not in ("id", "meta")} | {"participant": [
        {"actor": {"reference": f"Patient/{c.other_patient}"}, "status": "accepted"}]})  # fmt: skip
    for who in ("proxy", "patient"):
        assert (await c.browsers[who].get(forms_page(other["id"], "intake"))).status_code == 404
        r = await c.form_post(who, forms_page(other["id"], "intake"), {"q-reason": "x", "q-pain": "false"},
                              form_from=forms_page(appt, "intake"))  # fmt: skip
        assert r.status_code == 404
    assert await c.search("QuestionnaireResponse", [("subject", f"Patient/{c.other_patient}")]) == []


async def test_a_visit_booked_before_the_forms_existed_gets_them_and_they_are_stored_when_answered(
    clinic: Clinic,
) -> None:
    """A video visit made without the booking pages (imported, or from before): Housecall's own
    forms are asked for, and the Questionnaires join the organization's store with the answers."""
    from tests.visits.conftest import book as make_visit

    c = clinic
    appt = await make_visit(c, start_in=3 * 24 * 60)
    assert await c.search("Questionnaire", []) == []
    assert "Forms to complete before your visit" in text_of((await c.browsers["patient"].get("/portal")).text)
    assert (await fill(c, appt, "consent", {"q-agree": "true"})).status_code == 303
    assert {q["url"] for q in await c.search("Questionnaire", [])} == {forms.INTAKE_URL, forms.CONSENT_URL}
