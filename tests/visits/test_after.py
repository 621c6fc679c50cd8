"""After the visit (decision 0019): the note from the visit type's template (draft, then signed, on
the version read), the after-visit summary (Conditions, prescriptions, orders and a follow-up of
the Encounter; the patient told and the summary in the portal as PDF; the primary care team's
inbox when the visit was with someone else), and the patient's rating with technical problems."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.scheduling import model as scheduling_model
from housecall.visits import after, service
from housecall.web.records import Records
from housecall.workspace import inbox
from tests.clinic import Clinic, text_of
from tests.visits.conftest import Booked, system_update

VERSION = re.compile(r'name="version" value="(\d*)"')


async def as_system(c: Clinic, work: Any) -> Any:
    """Run ``work(rec, visit)`` with the organization's system access (test set-up)."""
    async with c.env.db.transaction() as conn:
        rec = Records(ix.Ctx(conn, c.env.settings, "https://testserver/fhir", Access.system(c.env.org_id)))
        return await work(rec)


async def start_visit(booked: Booked) -> None:
    """The patient checks in (the page) and the clinician admits them (the service, as the socket does)."""
    assert (await booked.check_in("VT", "802-555-0100")).status_code == 303

    async def admit(rec: Records) -> None:
        visit = await service.load_visit(rec, booked.appointment)
        assert visit is not None
        await service.admit(rec, visit, by=f"Practitioner/{booked.clinic.clinician}")

    await as_system(booked.clinic, admit)


async def end_visit(booked: Booked) -> None:
    async def hang_up(rec: Records) -> None:
        visit = await service.load_visit(rec, booked.appointment)
        assert visit is not None
        await service.end_visit(rec, visit)

    await as_system(booked.clinic, hang_up)


async def ended(booked: Booked) -> str:
    """A visit that happened and ended; returns its Encounter id."""
    await start_visit(booked)
    await end_visit(booked)
    found = await booked.clinic.search("Encounter", [("appointment", f"Appointment/{booked.appointment}")])
    assert found[0]["status"] == "finished"
    return str(found[0]["id"])


async def version_on(c: Clinic, who: str, path: str) -> str:
    match = VERSION.search((await c.browsers[who].get(path)).text)
    assert match, path
    return match.group(1)


# -- the note -----------------------------------------------------------------------------------------


async def test_the_note_is_written_from_the_template_saved_as_draft_and_signed(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    encounter = await ended(booked)
    note = f"/visits/{appt}/note"
    # Reachable from the visit page and the list of visits to write up.
    assert f'href="{note}"' in (await c.browsers["clinician"].get(f"/visits/{appt}")).text
    listed = await c.browsers["clinician"].get("/workspace/visits/ended")
    assert f'href="{note}"' in listed.text and "Not written" in text_of(listed.text)
    page = text_of((await c.browsers["clinician"].get(note)).text)
    for heading in ("Subjective", "Objective", "Assessment", "Plan", "How the visit was held"):
        assert heading in page
    # A draft: kept, not in the patient's portal.
    r = await c.form_post("clinician", note, {"action": "draft", "version": "", "subjective": "Sore throat 3 days."},
                          form_from=note)  # fmt: skip
    assert r.status_code == 303, r.text[:500]
    docs = await c.search("DocumentReference", [("encounter", f"Encounter/{encounter}")])
    assert len(docs) == 1
    doc = docs[0]
    assert doc["docStatus"] == "preliminary" and doc["type"]["coding"][0]["code"] == "11506-3"
    assert doc["author"] == [{"reference": f"Practitioner/{c.clinician}"}]
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{encounter}"}]
    assert doc["subject"]["reference"] == f"Patient/{c.patient}"
    portal = await c.browsers["patient"].get("/portal/documents")
    assert doc["id"] not in portal.text
    assert (await c.browsers["patient"].get(f"/portal/documents/{doc['id']}")).status_code == 404
    # Two edits from the same version: the second is refused and shows the version now stored.
    seen = await version_on(c, "clinician", note)
    first = {"action": "draft", "version": seen, "subjective": "Sore throat 3 days, no fever."}
    assert (await c.browsers["clinician"].post(note, data={**first, "csrf": _csrf(await c.browsers["clinician"].get(note))})).status_code == 303  # fmt: skip
    stale = {"action": "draft", "version": seen, "subjective": "Someone else's text"}
    r = await c.browsers["clinician"].post(
        note, data={**stale, "csrf": _csrf(await c.browsers["clinician"].get(note))}
    )
    assert r.status_code == 409 and "Someone else changed this" in text_of(r.text)
    assert "no fever" in r.text
    # Signing needs an assessment and a plan: the error sits beside the field, what was typed stays.
    r = await c.form_post("clinician", note, {"action": "sign", "version": await version_on(c, "clinician", note),
                                              "subjective": "Sore throat 3 days, no fever."}, form_from=note)  # fmt: skip
    assert r.status_code == 400
    assert 'id="assessment-error"' in r.text and 'id="plan-error"' in r.text and "no fever" in r.text
    r = await c.form_post("clinician", note, {
        "action": "sign", "version": await version_on(c, "clinician", note), "subjective": "Sore throat 3 days.",
        "objective": "Red pharynx on camera, no exudate.", "assessment": "Viral pharyngitis.",
        "plan": "Fluids, rest, ibuprofen.", "modality": "Video, patient at home."}, form_from=note)  # fmt: skip
    assert r.status_code == 303
    doc = (await c.search("DocumentReference", [("encounter", f"Encounter/{encounter}")]))[0]
    assert doc["docStatus"] == "final"
    assert "Viral pharyngitis." in base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    # Signed: no more changes; the patient now reads it in the portal.
    r = await c.form_post("clinician", note, {"action": "draft", "version": str(doc["meta"]["versionId"]),
                                              "subjective": "changed"}, form_from=f"/visits/{appt}/after")  # fmt: skip
    assert r.status_code == 409
    assert doc["id"] in (await c.browsers["patient"].get("/portal/documents")).text


def _csrf(page: Any) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match
    return match.group(1)


async def test_only_the_visits_clinicians_write_it(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    # Before check-in there is no record of the visit to write in.
    assert (await c.browsers["clinician"].get(f"/visits/{appt}/note")).status_code == 409
    await ended(booked)
    assert (
        await c.browsers["nurse"].get(f"/visits/{appt}/note")
    ).status_code == 404  # care team, not the visit's
    assert (await c.browsers["patient"].get(f"/visits/{appt}/note")).status_code in (303, 403)
    r = await c.form_post("nurse", f"/visits/{appt}/summary", {"action": "draft", "instructions": "x"},
                          form_from="/workspace")  # fmt: skip
    assert r.status_code == 404
    assert await c.search("DocumentReference", [("patient", f"Patient/{c.patient}")]) == []


async def test_templates_follow_the_modality_and_the_service_type() -> None:
    def visit(mode: str, service_type: str = "") -> service.Visit:
        appt: dict[str, Any] = {"id": "a", "serviceType": [{"text": service_type}] if service_type else []}
        enc = {"extension": [service._modality_entry(mode, "2026-01-01T10:00:00Z", None)]}
        return service.Visit(appt, enc)

    assert after.template_for(visit("video")) == ["subjective", "objective", "assessment", "plan", "modality"]
    assert "objective-audio" in after.template_for(visit("phone"))
    behavioral = after.template_for(visit("video", "Behavioral health follow-up"))
    assert behavioral.index("risk") == behavioral.index("plan") - 1
    assert "history" in after.template_for(visit("audio", "New patient visit"))


# -- the summary -------------------------------------------------------------------------------------


SIGNED = {
    "action": "sign", "diagnoses": "J02.9", "other_diagnoses": "J20.9 Acute bronchitis\nPoor sleep",
    "instructions": "Drink fluids and rest. Call us if you have a fever over 39 °C.",
    "prescriptions": "Amoxicillin 500 mg — one capsule three times a day for 10 days",
    "orders": "Rapid strep test", "follow_up_weeks": "2", "follow_up_note": "To check the throat again.",
}  # fmt: skip


async def sign_summary(c: Clinic, appt: str, **changes: str) -> Any:
    path = f"/visits/{appt}/summary"
    data = {**SIGNED, "version": await version_on(c, "clinician", path), **changes}
    return await c.form_post("clinician", path, data, form_from=path)


async def test_the_signed_summary_records_what_was_decided_and_reaches_the_portal(
    booked: Booked, told: list[tuple[str, str, str]]
) -> None:
    c, appt = booked.clinic, booked.appointment
    encounter = await ended(booked)
    ref = f"Encounter/{encounter}"
    # An order placed elsewhere during the visit is listed on the summary.
    await c.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "code": {"text": "Throat culture"}, "subject": {"reference": f"Patient/{c.patient}"},
                    "encounter": {"reference": ref}})  # fmt: skip
    page = await c.browsers["clinician"].get(f"/visits/{appt}/summary")
    assert "Throat culture" in page.text and "Acute pharyngitis" in page.text
    # Signing without a diagnosis: the error beside the field, everything typed kept.
    r = await sign_summary(c, appt, diagnoses="", other_diagnoses="")
    assert r.status_code == 400 and 'id="diagnoses-error"' in r.text
    assert "Drink fluids and rest" in r.text and "Amoxicillin 500 mg" in r.text
    r = await sign_summary(c, appt, follow_up_weeks="3")
    assert r.status_code == 400 and 'id="follow_up_weeks-error"' in r.text
    assert told == []
    r = await sign_summary(c, appt)
    assert r.status_code == 303, r.text[:500]
    # The Encounter's diagnoses, prescription and orders.
    conditions = await c.search("Condition", [("encounter", ref)])
    coded = sorted(
        (cc["code"].get("coding") or [{}])[0].get("code", "") + "|" + cc["code"]["text"] for cc in conditions
    )
    assert coded == ["J02.9|Acute pharyngitis, unspecified", "J20.9|Acute bronchitis", "|Poor sleep"]
    assert all(cc["category"][0]["coding"][0]["code"] == "encounter-diagnosis" for cc in conditions)
    meds = await c.search("MedicationRequest", [("encounter", ref)])
    assert [(m["medicationCodeableConcept"]["text"], m["dosageInstruction"][0]["text"]) for m in meds] == [
        ("Amoxicillin 500 mg", "one capsule three times a day for 10 days")
    ]
    assert meds[0]["requester"]["reference"] == f"Practitioner/{c.clinician}" and meds[0]["intent"] == "order"
    orders = await c.search("ServiceRequest", [("encounter", ref)])
    assert sorted(o["code"]["text"] for o in orders) == [
        "Follow-up visit",
        "Rapid strep test",
        "Throat culture",
    ]
    follow = next(o for o in orders if o["code"]["text"] == "Follow-up visit")
    assert follow["code"]["coding"][0]["code"] == "390906007" and follow["performer"][0]["reference"] == (
        f"Practitioner/{c.clinician}"
    )
    # The summary document: signed, in the portal, as PDF; the patient is told without health facts.
    docs = await c.search("DocumentReference", [("encounter", ref), ("type", "http://loinc.org|34133-9")])
    assert len(docs) == 1 and docs[0]["docStatus"] == "final"
    summary = docs[0]
    assert told == [(c.accounts["patient"].id, "result_released", f"/visits/{appt}/after")]
    listed = await c.browsers["patient"].get("/portal/documents")
    assert summary["id"] in listed.text and "After-visit summary" in listed.text
    pdf = await c.browsers["patient"].get(f"/portal/documents/{summary['id']}.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert (
        pdf.content.startswith(b"%PDF")
        and b"Amoxicillin 500 mg" in pdf.content
        and b"Throat culture" in pdf.content
    )
    mine = text_of((await c.browsers["patient"].get(f"/visits/{appt}/after")).text)
    assert "Drink fluids and rest" in mine and "Acute bronchitis" in mine
    assert "Book the follow-up visit" in mine and "To check the throat again." in mine
    # Signed once: the form is gone; the patient has no PCP, so nothing goes to another inbox.
    r = await c.browsers["clinician"].get(f"/visits/{appt}/summary")
    assert 'id="summary-signed"' in r.text and 'name="version"' not in r.text
    assert [t for t in await c.search("Task", [("patient", f"Patient/{c.patient}")])
            if inbox.kind_of(t) == "visit-summary"] == []  # fmt: skip


async def test_a_draft_summary_stays_with_the_clinician(
    booked: Booked, told: list[tuple[str, str, str]]
) -> None:
    c, appt = booked.clinic, booked.appointment
    encounter = await ended(booked)
    path = f"/visits/{appt}/summary"
    r = await c.form_post("clinician", path, {"action": "draft", "version": "", "instructions": "Rest."},
                          form_from=path)  # fmt: skip
    assert r.status_code == 303
    assert await c.search("Condition", [("encounter", f"Encounter/{encounter}")]) == []
    assert told == []
    page = text_of((await c.browsers["patient"].get(f"/visits/{appt}/after")).text)
    assert "has not finished the summary yet" in page and "Rest." not in page
    assert "Rest." in (await c.browsers["clinician"].get(path)).text  # the draft comes back to edit


async def test_the_summary_goes_to_the_primary_care_team_when_the_visit_was_with_someone_else(
    booked: Booked,
) -> None:
    c, appt = booked.clinic, booked.appointment
    patient = await c.read("Patient", c.patient)
    patient["generalPractitioner"] = [{"reference": f"Practitioner/{c.nurse}"}]  # Nolan is the PCP here
    await system_update(c, patient)
    await ended(booked)
    assert (await sign_summary(c, appt)).status_code == 303
    summary = (await c.search("DocumentReference", [("type", "http://loinc.org|34133-9")]))[0]
    tasks = await c.search("Task", [("focus", f"DocumentReference/{summary['id']}")])
    assert len(tasks) == 1
    task = tasks[0]
    assert inbox.kind_of(task) == "visit-summary" and inbox.pool_of(task) == c.pool
    assert task["for"]["reference"] == f"Patient/{c.patient}" and task["status"] == "requested"
    work = text_of((await c.browsers["nurse"].get("/workspace?kind=visit-summary")).text)
    assert "After-visit summary of the virtual visit" in work and "Carter" in work


async def test_no_copy_when_the_visit_was_with_the_primary_care_practitioner(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    patient = await c.read("Patient", c.patient)
    patient["generalPractitioner"] = [{"reference": f"Practitioner/{c.clinician}"}]
    await system_update(c, patient)
    await ended(booked)
    assert (await sign_summary(c, appt)).status_code == 303
    tasks = await c.search("Task", [("patient", f"Patient/{c.patient}")])
    assert [t for t in tasks if inbox.kind_of(t) == "visit-summary"] == []


# -- the rating -------------------------------------------------------------------------------------


async def test_the_patient_rates_the_visit_and_technical_problems_reach_the_care_team(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    feedback = f"/visits/{appt}/feedback"
    await start_visit(booked)
    # Not before it ended.
    assert "once it has ended" in text_of((await c.browsers["patient"].get(f"/visits/{appt}/after")).text)
    r = await c.form_post("patient", feedback, {"rating": "5"}, form_from=f"/visits/{appt}/after")
    assert r.status_code == 409
    await end_visit(booked)
    # From the visit page once ended.
    assert f'href="/visits/{appt}/after"' in (await c.browsers["patient"].get(f"/visits/{appt}")).text
    r = await c.form_post("patient", feedback, {"comment": "The sound cut out", "problems": "no-sound"},
                          form_from=f"/visits/{appt}/after")  # fmt: skip
    assert r.status_code == 400 and 'id="rating-error"' in r.text and "The sound cut out" in r.text
    browser = c.browsers["patient"]
    token = _csrf(await browser.get(f"/visits/{appt}/after"))
    r = await browser.post(feedback, data={"csrf": token, "rating": "3", "comment": "The sound cut out",
                                           "problems": ["no-sound", "dropped"]})  # fmt: skip
    assert r.status_code == 303
    responses = await c.search("QuestionnaireResponse", [("patient", f"Patient/{c.patient}")])
    assert len(responses) == 1
    qr = responses[0]
    assert qr["questionnaire"] == after.QUESTIONNAIRE and qr["status"] == "completed"
    assert after.rating_of(qr) == (3, "The sound cut out", ["no-sound", "dropped"])
    assert qr["author"]["reference"] == f"Patient/{c.patient}"
    tasks = await c.search("Task", [("focus", f"QuestionnaireResponse/{qr['id']}")])
    assert len(tasks) == 1 and inbox.kind_of(tasks[0]) == "tech-problem" and inbox.pool_of(tasks[0]) == c.pool
    assert "No sound, The call dropped" in tasks[0]["description"]
    # Once per visit; the clinician sees it on the visit's write-up.
    r = await c.form_post("patient", feedback, {"rating": "5"}, form_from="/portal")
    assert r.status_code == 409
    staff = text_of((await c.browsers["clinician"].get(f"/visits/{appt}/after")).text)
    assert "3 out of 5." in staff and "No sound" in staff
    listed = text_of((await c.browsers["nurse"].get("/workspace/visits/ended")).text)
    assert "3 out of 5." in listed and "Technical problems reported: No sound, The call dropped" in listed


async def test_a_rating_without_problems_opens_no_task_and_others_cannot_rate(booked: Booked) -> None:
    c, appt = booked.clinic, booked.appointment
    await ended(booked)
    # Another patient of the clinic does not reach this visit.
    other, _account = await c.env.patient_session()
    assert (await other.get(f"/visits/{appt}/after")).status_code == 404
    r = await other.post(
        f"/visits/{appt}/feedback", data={"rating": "1", "csrf": _csrf(await other.get("/portal"))}
    )
    assert r.status_code == 404
    r = await c.form_post(
        "patient", f"/visits/{appt}/feedback", {"rating": "5"}, form_from=f"/visits/{appt}/after"
    )
    assert r.status_code == 303
    tasks = await c.search("Task", [("patient", f"Patient/{c.patient}")])
    assert [t for t in tasks if inbox.kind_of(t) == "tech-problem"] == []
    r = await c.form_post("clinician", f"/visits/{appt}/feedback", {"rating": "1"}, form_from="/workspace")
    assert r.status_code in (303, 403) and len(await c.search("QuestionnaireResponse", [])) == 1


async def _sick_visits(c: Clinic) -> tuple[dict[str, Any], dict[str, Any]]:
    """A "Sick visit" service and the clinician's role that offers it."""
    kind = await c.create({"resourceType": "HealthcareService", "active": True, "name": "Sick visit",
                           "appointmentRequired": True})  # fmt: skip
    role = await c.create({"resourceType": "PractitionerRole", "active": True,
                           "practitioner": {"reference": f"Practitioner/{c.clinician}"},
                           "healthcareService": [{"reference": f"HealthcareService/{kind['id']}"}]})  # fmt: skip
    return kind, role


async def test_the_follow_up_link_books_the_same_kind_of_visit_with_the_same_clinician(
    booked: Booked,
) -> None:
    c, appt = booked.clinic, booked.appointment
    kind, role = await _sick_visits(c)
    appointment = await c.read("Appointment", appt)
    appointment["serviceType"] = [{"text": "Sick visit"}]
    await system_update(c, appointment)
    await ended(booked)
    assert (await sign_summary(c, appt, follow_up_weeks="4")).status_code == 303
    page = await c.browsers["patient"].get(f"/visits/{appt}/after")
    link = re.search(r'href="(/portal/appointments/book\?[^"]+)" id="book-follow-up"', page.text)
    assert link, page.text[:2000]
    href = link.group(1).replace("&amp;", "&")
    assert f"service_id={kind['id']}" in href and f"role={role['id']}" in href and "week=2" in href
    booking = text_of((await c.browsers["patient"].get(href)).text)
    assert "Carter" in booking


async def test_the_clinician_books_the_follow_up_from_the_visit(booked: Booked) -> None:
    """From the visit's after page the clinician books the follow-up at a free time of hers: the
    Appointment is based on the request, which is done; a time taken meanwhile is said beside the
    field and nothing is written."""
    c, appt = booked.clinic, booked.appointment
    _, role = await _sick_visits(c)
    schedule = await c.create({"resourceType": "Schedule", "active": True,
                               "actor": [{"reference": f"PractitionerRole/{role['id']}"}]})  # fmt: skip
    start = (service.now_dt() + dt.timedelta(weeks=4)).replace(hour=15, minute=0, second=0, microsecond=0)
    slots = []
    for h in (0, 1):
        at = start + dt.timedelta(hours=h)
        slots.append(await c.create({
            "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule['id']}"}, "status": "free",
            "appointmentType": scheduling_model.mode_concept("video"),
            "start": service.iso(at), "end": service.iso(at + dt.timedelta(minutes=20)),
        }))  # fmt: skip
    appointment = await c.read("Appointment", appt)
    appointment["serviceType"] = [{"text": "Sick visit"}]
    await system_update(c, appointment)
    await ended(booked)
    assert (await sign_summary(c, appt, follow_up_weeks="4")).status_code == 303
    (request,) = await c.search("ServiceRequest", [("category", f"{after.AFTER_SYSTEM}|follow-up")])
    page = await c.browsers["clinician"].get(f"/visits/{appt}/after")
    assert all(f'value="{s["id"]}"' in page.text for s in slots)

    # Nothing chosen: said beside the field.
    path = f"/visits/{appt}/follow-up"
    r = await c.form_post("clinician", path, {"request": request["id"]}, form_from=f"/visits/{appt}/after")
    assert r.status_code == 409 and 'id="slot-error"' in r.text
    # A time someone else took meanwhile: refused, nothing written.
    taken = await c.read("Slot", slots[0]["id"])
    await system_update(c, {**taken, "status": "busy"})
    r = await c.form_post("clinician", path, {"request": request["id"], "slot": slots[0]["id"]},
                          form_from=f"/visits/{appt}/after")  # fmt: skip
    assert r.status_code == 409 and 'id="slot-error"' in r.text
    assert (await c.read("ServiceRequest", request["id"]))["status"] == "active"

    r = await c.form_post("clinician", path, {"request": request["id"], "slot": slots[1]["id"]},
                          form_from=f"/visits/{appt}/after")  # fmt: skip
    assert r.status_code == 303 and r.headers["location"].endswith("?booked=1")
    (follow_up,) = [a for a in await c.search("Appointment", [("patient", c.patient)]) if a.get("basedOn")]
    assert follow_up["basedOn"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    assert follow_up["slot"] == [{"reference": f"Slot/{slots[1]['id']}"}] and follow_up["status"] == "booked"
    assert (await c.read("ServiceRequest", request["id"]))["status"] == "completed"
    assert (await c.read("Slot", slots[1]["id"]))["status"] == "busy"
    # Done: the patient is no longer asked to book it, and it cannot be booked twice.
    mine = await c.browsers["patient"].get(f"/visits/{appt}/after")
    assert "Book the follow-up visit" not in mine.text
    again = await c.form_post("clinician", path, {"request": request["id"], "slot": slots[1]["id"]},
                              form_from="/workspace")  # fmt: skip
    assert again.status_code == 409
