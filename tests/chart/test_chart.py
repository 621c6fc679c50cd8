"""The clinician's patients and chart: only the patients they care for, the chart's sections, and
404 for a patient outside the care team."""

from __future__ import annotations

import base64

from tests.clinic import Clinic, text_of


async def fill_chart(clinic: Clinic) -> None:
    p = {"reference": f"Patient/{clinic.patient}"}
    carter = {"reference": f"Practitioner/{clinic.clinician}"}
    active = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    }
    await clinic.create({"resourceType": "Condition", "subject": p, "clinicalStatus": active,
                         "code": {"text": "Essential hypertension"}})  # fmt: skip
    await clinic.create({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": p,
                         "medicationCodeableConcept": {"text": "Lisinopril 10 mg oral tablet"}})  # fmt: skip
    for day in ("2026-09-14", "2026-10-20"):
        await clinic.create({"resourceType": "Encounter", "status": "finished", "subject": p,
                             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
                             "type": [{"text": f"Telemedicine consultation {day}"}],
                             "participant": [{"individual": carter}],
                             "period": {"start": f"{day}T14:00:00Z", "end": f"{day}T14:20:00Z"}})  # fmt: skip
    await clinic.create({"resourceType": "Observation", "status": "final", "subject": p,
                         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                         "code": {"text": "Hemoglobin A1c"}, "effectiveDateTime": "2026-10-21T09:00:00Z",
                         "valueQuantity": {"value": 6.1, "unit": "%"},
                         "interpretation": [{"text": "High"}]})  # fmt: skip
    await clinic.create({"resourceType": "Communication", "status": "completed", "subject": p, "sender": p,
                         "sent": "2026-10-22T10:00:00Z", "payload": [{"contentString": "Is the new dose right?"}]})  # fmt: skip
    await clinic.create({"resourceType": "DocumentReference", "status": "current", "subject": p, "author": [carter],
                         "date": "2026-10-20T15:00:00Z",
                         "content": [{"attachment": {"contentType": "text/plain", "title": "After-visit summary 2026-10-20",
                                                     "data": base64.b64encode(b"Blood pressure is better.").decode()}}]})  # fmt: skip
    await clinic.create({"resourceType": "Appointment", "status": "booked", "description": "Blood pressure follow-up",
                         "start": "2099-01-05T15:00:00Z", "end": "2099-01-05T15:20:00Z",
                         "participant": [{"actor": p, "status": "accepted"}, {"actor": carter, "status": "accepted"}]})  # fmt: skip
    await clinic.create({"resourceType": "Appointment", "status": "fulfilled", "description": "Long past visit",
                         "start": "2020-01-05T15:00:00Z", "end": "2020-01-05T15:20:00Z",
                         "participant": [{"actor": p, "status": "accepted"}]})  # fmt: skip


async def test_the_patient_list_holds_only_the_clinicians_patients_and_searches_by_name(
    clinic: Clinic,
) -> None:
    await clinic.create({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Outsider"}]})
    browser = clinic.browsers["clinician"]
    text = text_of((await browser.get("/workspace/patients")).text)
    assert "Ana Reyes" in text and "Ben Other" not in text and "Ana Outsider" not in text
    assert "Ana Reyes" in text_of((await browser.get("/workspace/patients?q=rey")).text)
    found = text_of((await browser.get("/workspace/patients?q=ana")).text)
    assert "Ana Reyes" in found and "Ana Outsider" not in found
    assert "None of your patients is called that." in text_of(
        (await browser.get("/workspace/patients?q=zzz")).text
    )


async def test_the_chart_shows_summary_visits_results_messages_documents_and_upcoming(clinic: Clinic) -> None:
    await fill_chart(clinic)
    r = await clinic.browsers["nurse"].get(f"/workspace/patients/{clinic.patient}")
    assert r.status_code == 200
    text = text_of(r.text)
    assert "Ana Reyes" in text
    assert "Essential hypertension" in text and "Lisinopril 10 mg oral tablet" in text
    # Encounters newest first, with who saw the patient.
    assert text.index("Telemedicine consultation 2026-10-20") < text.index(
        "Telemedicine consultation 2026-09-14"
    )
    assert "Maya Carter" in text
    assert "Hemoglobin A1c 6.1 % High" in text
    assert "Is the new dose right?" in text
    assert "After-visit summary 2026-10-20" in text
    assert "Blood pressure follow-up" in text and "Long past visit" not in text
    docs = await clinic.search("DocumentReference", [("patient", f"Patient/{clinic.patient}")])
    page = await clinic.browsers["nurse"].get(
        f"/workspace/patients/{clinic.patient}/documents/{docs[0]['id']}"
    )
    assert page.status_code == 200 and "Blood pressure is better." in text_of(page.text)
    pdf = await clinic.browsers["nurse"].get(
        f"/workspace/patients/{clinic.patient}/documents/{docs[0]['id']}.pdf"
    )
    assert pdf.content.startswith(b"%PDF") and b"After-visit summary 2026-10-20" in pdf.content


async def test_a_patient_outside_the_care_team_answers_404(clinic: Clinic) -> None:
    doc = await clinic.create({"resourceType": "DocumentReference", "status": "current",
                               "subject": {"reference": f"Patient/{clinic.other_patient}"},
                               "content": [{"attachment": {"contentType": "text/plain", "title": "Ben's note",
                                                           "data": base64.b64encode(b"private").decode()}}]})  # fmt: skip
    browser = clinic.browsers["clinician"]
    for path in (
        f"/workspace/patients/{clinic.other_patient}",
        "/workspace/patients/no-such-patient",
        f"/workspace/patients/{clinic.other_patient}/documents/{doc['id']}",
        f"/workspace/patients/{clinic.other_patient}/documents/{doc['id']}.pdf",
        f"/workspace/patients/{clinic.patient}/documents/{doc['id']}",  # a care-team patient's URL, not their document
    ):
        r = await browser.get(path)
        assert r.status_code == 404, path
        assert "Ben" not in text_of(r.text) and "private" not in r.text


async def test_the_chart_is_for_the_care_team(clinic: Clinic) -> None:
    for who in ("patient", "desk"):
        r = await clinic.browsers[who].get(f"/workspace/patients/{clinic.patient}")
        assert r.status_code == 403, who
    anonymous = clinic.env.client()
    assert (await anonymous.get("/workspace/patients")).status_code in (303, 401)
