"""Prescription refills: the patient asks from their medicine list, the request is a Task in the
prescriber's pool, the clinician approves (a new MedicationRequest) or denies with a reason, and
the patient sees the answer."""

from __future__ import annotations

import re
from typing import Any

from housecall import notify
from housecall.refills import service
from housecall.workspace import inbox
from tests.clinic import Clinic, text_of


async def setup(
    c: Clinic, patient: str | None = None, name: str = "Lisinopril 10 mg oral tablet"
) -> dict[str, Any]:
    await c.create({"resourceType": "Organization", "active": True, "name": "Lakeside Pharmacy",
                    "type": [{"coding": [{"system": service.PHARMACY_SYSTEM, "code": service.PHARMACY_CODE}]}]})  # fmt: skip
    return await c.create({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "314076", "display": name}]},
        "subject": {"reference": f"Patient/{patient or c.patient}"},
        "requester": {"reference": f"Practitioner/{c.clinician}"},
        "authoredOn": "2026-05-01T10:00:00Z",
        "dosageInstruction": [{"text": "Take 1 tablet by mouth once a day"}],
        "dispenseRequest": {"numberOfRepeatsAllowed": 2, "quantity": {"value": 30, "unit": "tablet"}},
    })  # fmt: skip


async def pharmacy_id(c: Clinic) -> str:
    orgs = await c.search("Organization", [("name", "Lakeside Pharmacy")])
    return str(orgs[0]["id"])


async def ask(c: Clinic, rx: dict[str, Any], **fields: str) -> Any:
    data = {
        "medication": f"MedicationRequest/{rx['id']}",
        "pharmacy": await pharmacy_id(c),
        "note": "",
        **fields,
    }
    return await c.form_post("patient", "/portal/medications/refill", data, form_from="/portal/medications")


async def refill_task(c: Clinic, rx: dict[str, Any]) -> dict[str, Any]:
    tasks = await c.search("Task", [("focus", f"MedicationRequest/{rx['id']}")])
    assert len(tasks) == 1
    return tasks[0]


async def test_request_becomes_a_task_and_approval_writes_a_prescription(
    clinic: Clinic, told: list[Any]
) -> None:
    c = clinic
    rx = await setup(c)
    page = await c.browsers["patient"].get("/portal/medications")
    assert page.status_code == 200
    assert "Lisinopril 10 mg oral tablet" in text_of(page.text) and "Request a refill" in page.text

    r = await ask(c, rx, note="Running out on Friday")
    assert r.status_code == 303 and r.headers["location"] == "/portal/medications?sent=1"
    task = await refill_task(c, rx)
    assert inbox.kind_of(task) == "refill" and task["status"] == "requested"
    assert inbox.pool_of(task) == c.pool  # the prescriber's pool
    assert task["for"]["reference"] == f"Patient/{c.patient}"
    assert task["note"][0]["text"] == "Running out on Friday"
    mine = text_of((await c.browsers["patient"].get("/portal/medications")).text)
    assert "Status: waiting for your care team" in mine and "Pharmacy: Lakeside Pharmacy" in mine
    assert "1 refill request is waiting for an answer" in text_of(
        (await c.browsers["patient"].get("/portal")).text
    )

    # It waits in the clinician's inbox, linked to the page that decides it.
    queue = await c.browsers["clinician"].get("/workspace", params={"kind": "refill"})
    assert f"/workspace/refills/{task['id']}" in queue.text
    decide = await c.browsers["clinician"].get(f"/workspace/refills/{task['id']}")
    assert decide.status_code == 200 and "Running out on Friday" in text_of(decide.text)
    r = await c.form_post("clinician", f"/workspace/refills/{task['id']}/approve",
                          {"version": "1", "refills": "3", "pharmacy_note": ""},
                          form_from=f"/workspace/refills/{task['id']}")  # fmt: skip
    assert r.status_code == 303

    done = await c.read("Task", task["id"])
    assert done["status"] == "completed" and done["owner"]["reference"] == f"Practitioner/{c.clinician}"
    new_ref = done["output"][0]["valueReference"]["reference"]
    new = await c.read("MedicationRequest", new_ref.split("/")[1])
    assert new["status"] == "active" and new["requester"]["reference"] == f"Practitioner/{c.clinician}"
    assert new["priorPrescription"]["reference"] == f"MedicationRequest/{rx['id']}"
    assert new["dispenseRequest"]["numberOfRepeatsAllowed"] == 3
    assert new["dispenseRequest"]["performer"]["reference"] == f"Organization/{await pharmacy_id(c)}"
    assert (await c.read("MedicationRequest", rx["id"]))["status"] == "completed"

    after = text_of((await c.browsers["patient"].get("/portal/medications")).text)
    assert "Status: approved" in after and "The prescription was sent to Lakeside Pharmacy" in after
    assert after.count("Lisinopril 10 mg oral tablet") == 2  # the new prescription and the request
    assert told == [(c.accounts["patient"].id, notify.Kind.REFILL_DECIDED.value, "/portal/medications")]
    # Once decided, it cannot be decided again.
    again = await c.form_post("clinician", f"/workspace/refills/{task['id']}/deny",
                              {"version": "2", "reason": "No"}, form_from="/workspace")  # fmt: skip
    assert again.status_code == 409


async def test_denial_needs_a_reason_and_the_patient_reads_it(clinic: Clinic, told: list[Any]) -> None:
    c = clinic
    rx = await setup(c)
    assert (await ask(c, rx)).status_code == 303
    task = await refill_task(c, rx)
    path = f"/workspace/refills/{task['id']}"
    r = await c.form_post("clinician", f"{path}/deny", {"version": "1", "reason": "   "}, form_from=path)
    assert r.status_code == 400
    assert 'id="reason-error"' in r.text and "Write the reason: the patient will read it." in r.text
    assert 'aria-invalid="true"' in r.text
    assert (await c.read("Task", task["id"]))["status"] == "requested"
    assert told == []

    r = await c.form_post("clinician", f"{path}/deny",
                          {"version": "1", "reason": "Please book a blood pressure check first."}, form_from=path)  # fmt: skip
    assert r.status_code == 303
    stored = await c.read("Task", task["id"])
    assert stored["status"] == "rejected" and stored["statusReason"]["text"].startswith("Please book")
    page = text_of((await c.browsers["patient"].get("/portal/medications")).text)
    assert "Status: not approved" in page and "Reason: Please book a blood pressure check first." in page
    assert (await c.read("MedicationRequest", rx["id"]))["status"] == "active"  # nothing new prescribed
    assert told == [(c.accounts["patient"].id, notify.Kind.REFILL_DECIDED.value, "/portal/medications")]


async def test_request_form_errors_are_shown_beside_the_field(clinic: Clinic) -> None:
    c = clinic
    rx = await setup(c)
    r = await ask(c, rx, pharmacy="", note="keep me")
    assert r.status_code == 400
    slug = f"MedicationRequest-{rx['id']}"
    assert f'id="pharmacy-{slug}-error"' in r.text and "Choose the pharmacy" in r.text
    assert "keep me" in r.text  # what was typed is kept
    r = await ask(c, rx, pharmacy="other", pharmacy_other="")
    assert r.status_code == 400 and f'id="pharmacy_other-{slug}-error"' in r.text
    assert await c.search("Task", [("focus", f"MedicationRequest/{rx['id']}")]) == []
    # Another pharmacy, typed in, is accepted; asking twice is not.
    assert (await ask(c, rx, pharmacy="other", pharmacy_other="Corner Drugs, Burlington")).status_code == 303
    task = await refill_task(c, rx)
    assert task["input"][1]["valueString"] == "Corner Drugs, Burlington"
    twice = await ask(c, rx)
    assert twice.status_code == 400 and "already asked for a refill" in twice.text


async def test_another_patients_medicine_cannot_be_refilled_or_decided(clinic: Clinic) -> None:
    c = clinic
    theirs = await setup(c, patient=c.other_patient, name="Someone else's pill")
    r = await ask(c, theirs)
    assert r.status_code == 400 and "not on your list" in r.text
    assert await c.search("Task", [("focus", f"MedicationRequest/{theirs['id']}")]) == []
    assert "Someone else" not in (await c.browsers["patient"].get("/portal/medications")).text
    # A refill Task of a patient outside the clinician's care team is not theirs to see or decide.
    other = await c.create({
        "resourceType": "Task", "status": "requested", "intent": "order",
        "code": {"coding": [{"system": inbox.WORK_SYSTEM, "code": "refill"}]},
        "for": {"reference": f"Patient/{c.other_patient}"},
        "focus": {"reference": f"MedicationRequest/{theirs['id']}"},
    })  # fmt: skip
    assert (await c.browsers["clinician"].get(f"/workspace/refills/{other['id']}")).status_code == 404
    r = await c.form_post("clinician", f"/workspace/refills/{other['id']}/approve",
                          {"version": "1", "refills": "1"}, form_from="/workspace")  # fmt: skip
    assert r.status_code == 404
    assert (await c.read("Task", other["id"]))["status"] == "requested"
    assert (await c.browsers["patient"].get(f"/workspace/refills/{other['id']}")).status_code == 403


async def test_spanish_medicines_page(clinic: Clinic) -> None:
    c = clinic
    await setup(c)
    await c.form_post("patient", "/language", {"lang": "es", "next": "/portal"}, form_from="/portal")
    page = await c.browsers["patient"].get("/portal/medications")
    assert re.search(r"Solicitar (una )?renovación", page.text)


async def test_only_a_prescriber_approves(clinic: Clinic) -> None:
    c = clinic
    rx = await setup(c)
    assert (await ask(c, rx)).status_code == 303
    task = await refill_task(c, rx)
    path = f"/workspace/refills/{task['id']}"
    page = text_of((await c.browsers["nurse"].get(path)).text)
    assert "Only a prescriber can approve a refill." in page and "Deny the refill" in page
    r = await c.form_post("nurse", f"{path}/approve", {"version": "1", "refills": "1"}, form_from=path)
    assert r.status_code == 403
    assert (await c.read("Task", task["id"]))["status"] == "requested"
    assert await c.search("MedicationRequest", [("patient", f"Patient/{c.patient}"), ("status", "active")])


async def test_a_proxy_asks_for_a_reported_medicine_and_both_are_told(
    clinic: Clinic, told: list[Any]
) -> None:
    from housecall.identity import service as identity

    c, env = clinic, clinic.env
    await setup(c)
    statement = await c.create({
        "resourceType": "MedicationStatement", "status": "active",
        "medicationCodeableConcept": {"text": "Vitamin D 1000 IU"},
        "subject": {"reference": f"Patient/{c.patient}"}, "dosage": [{"text": "1 capsule a day"}],
    })  # fmt: skip
    proxy = await env.account("proxy")
    async with env.db.transaction() as conn:
        await identity.grant_proxy(conn, proxy.id, c.patient, granted_by="system:test", relationship="parent",
                                   settings=env.settings)  # fmt: skip
    browser = env.client()
    await env.signin(browser, proxy.email, next="/portal")
    c.browsers["proxy"] = browser
    await c.form_post("proxy", "/account/acting-for", {"patient": c.patient, "next": "/portal"},
                      form_from="/portal/choose")  # fmt: skip
    page = text_of((await browser.get("/portal/medications")).text)
    assert "Vitamin D 1000 IU" in page and "You told us you take this medicine." in page
    r = await c.form_post("proxy", "/portal/medications/refill",
                          {"medication": f"MedicationStatement/{statement['id']}", "pharmacy": await pharmacy_id(c)},
                          form_from="/portal/medications")  # fmt: skip
    assert r.status_code == 303
    tasks = await c.search("Task", [("focus", f"MedicationStatement/{statement['id']}")])
    assert len(tasks) == 1 and tasks[0]["requester"]["reference"].startswith("RelatedPerson/")
    assert inbox.pool_of(tasks[0]) == c.pool  # no prescriber: the care team's pool
    path = f"/workspace/refills/{tasks[0]['id']}"
    r = await c.form_post("clinician", f"{path}/approve", {"version": "1", "refills": "0"}, form_from=path)
    assert r.status_code == 303
    new = await c.search("MedicationRequest", [("patient", f"Patient/{c.patient}"), ("requester", f"Practitioner/{c.clinician}"),
                                               ("status", "active"), ("_sort", "-_lastUpdated")])  # fmt: skip
    assert any(m["medicationCodeableConcept"] == {"text": "Vitamin D 1000 IU"} for m in new)
    assert sorted(a for a, _k, _p in told) == sorted([c.accounts["patient"].id, proxy.id])
