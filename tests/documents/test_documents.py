"""Visit summaries and notes in the portal: the list, reading one in the page, the PDF download,
and nobody else's documents; the health record summary's four lists."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.clinic import Clinic, text_of

SUMMARY = "You were seen today for high blood pressure.\nBlood pressure 128/82 mmHg — better than last time.\nKeep taking lisinopril."


async def make_document(clinic: Clinic, patient: str, title: str = "After-visit summary 2026-11-02",
                        text: str = SUMMARY, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return await clinic.create({
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9", "display": "Summary of episode note"}],
                 "text": "After-visit summary"},
        "subject": {"reference": f"Patient/{patient}"},
        "date": "2026-11-02T15:30:00Z",
        "author": [{"reference": f"Practitioner/{clinic.clinician}"}],
        "description": "After-visit summary",
        "content": [{"attachment": {"contentType": "text/plain", "language": "en", "title": title,
                                    "data": base64.b64encode(text.encode()).decode()}}],
        **extra,
    })  # fmt: skip


async def test_documents_are_listed_read_in_the_page_and_downloaded_as_pdf(clinic: Clinic) -> None:
    doc = await make_document(clinic, clinic.patient)
    browser = clinic.browsers["patient"]
    listing = text_of((await browser.get("/portal/documents")).text)
    assert "After-visit summary 2026-11-02" in listing and "Maya Carter" in listing
    page = await browser.get(f"/portal/documents/{doc['id']}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "You were seen today for high blood pressure." in text and "Keep taking lisinopril." in text
    assert "Written by Maya Carter" in text
    pdf = await browser.get(f"/portal/documents/{doc['id']}.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert "attachment" in pdf.headers["content-disposition"]
    assert pdf.content.startswith(b"%PDF-")
    assert b"After-visit summary 2026-11-02" in pdf.content and b"Keep taking lisinopril." in pdf.content
    assert b"Ana Reyes" in pdf.content


async def test_a_pdf_attachment_is_handed_back_as_it_is(clinic: Clinic) -> None:
    original = b"%PDF-1.4\n% a scanned letter\n%%EOF\n"
    doc = await clinic.create({
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{clinic.patient}"},
        "content": [{"attachment": {"contentType": "application/pdf", "title": "Referral letter",
                                    "data": base64.b64encode(original).decode()}}],
    })  # fmt: skip
    browser = clinic.browsers["patient"]
    assert "This document is a PDF" in text_of((await browser.get(f"/portal/documents/{doc['id']}")).text)
    assert (await browser.get(f"/portal/documents/{doc['id']}.pdf")).content == original


async def test_superseded_and_other_patients_documents_answer_404(clinic: Clinic) -> None:
    theirs = await make_document(clinic, clinic.other_patient, title="Ben's summary")
    old = await make_document(clinic, clinic.patient, title="Old summary", status="superseded")
    browser = clinic.browsers["patient"]
    listing = text_of((await browser.get("/portal/documents")).text)
    assert "Ben's summary" not in listing and "Old summary" not in listing
    for doc in (theirs, old):
        for path in (f"/portal/documents/{doc['id']}", f"/portal/documents/{doc['id']}.pdf"):
            r = await browser.get(path)
            assert r.status_code == 404 and not r.content.startswith(b"%PDF"), path
    assert (await browser.get("/portal/documents/no-such-document.pdf")).status_code == 404


@pytest.mark.parametrize("who", ["clinician", "desk"])
async def test_the_portal_documents_are_for_patients(clinic: Clinic, who: str) -> None:
    doc = await make_document(clinic, clinic.patient)
    assert (await clinic.browsers[who].get(f"/portal/documents/{doc['id']}.pdf")).status_code == 403


async def test_the_record_summary_shows_problems_medications_allergies_and_immunizations(
    clinic: Clinic,
) -> None:
    p = {"reference": f"Patient/{clinic.patient}"}
    active = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    }
    resolved = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]
    }
    await clinic.create({"resourceType": "Condition", "subject": p, "clinicalStatus": active,
                         "code": {"text": "Essential hypertension"}, "onsetDateTime": "2021-03-01"})  # fmt: skip
    await clinic.create({"resourceType": "Condition", "subject": p, "clinicalStatus": resolved,
                         "code": {"text": "Acute bronchitis"}})  # fmt: skip
    await clinic.create({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": p,
                         "medicationCodeableConcept": {"text": "Lisinopril 10 mg oral tablet"},
                         "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}]})  # fmt: skip
    await clinic.create({"resourceType": "MedicationRequest", "status": "stopped", "intent": "order", "subject": p,
                         "medicationCodeableConcept": {"text": "Amoxicillin 500 mg"}})  # fmt: skip
    await clinic.create({"resourceType": "AllergyIntolerance", "patient": p, "criticality": "high",
                         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                         "code": {"text": "Penicillin"},
                         "reaction": [{"manifestation": [{"text": "Hives"}]}]})  # fmt: skip
    await clinic.create({"resourceType": "Immunization", "status": "completed", "patient": p,
                         "vaccineCode": {"text": "Influenza, seasonal"}, "occurrenceDateTime": "2026-10-01"})  # fmt: skip
    await clinic.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{clinic.other_patient}"},
                         "clinicalStatus": active, "code": {"text": "Someone else's asthma"}})  # fmt: skip
    page = await clinic.browsers["patient"].get("/portal/record")
    assert page.status_code == 200
    text = text_of(page.text)
    for heading in ("Problems 1", "Medications 1", "Allergies 1", "Immunizations 1"):
        assert heading in text, heading
    assert "Essential hypertension" in text and "Acute bronchitis" not in text
    assert "Lisinopril 10 mg oral tablet" in text and "Take 1 tablet by mouth once daily" in text
    assert "Amoxicillin" not in text
    assert "Penicillin" in text and "Hives" in text and "High risk" in text
    assert "Influenza, seasonal" in text
    assert "Someone else's asthma" not in text
    assert 'href="/account/record-access"' in page.text and 'href="/account/apps"' in page.text


async def test_an_empty_record_says_so_in_spanish(clinic: Clinic) -> None:
    browser = clinic.browsers["patient"]
    r = await browser.get("/portal/record", headers={"Accept-Language": "es"})
    text = text_of(r.text)
    assert "Mi historia clínica" in text and "No hay alergias registradas." in text
