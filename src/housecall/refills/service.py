"""Prescription refills: a patient asks, the prescriber's pool decides, the patient sees the answer.

How a refill request is written down (so the same facts show on the FHIR API; decision 0013):

- the request **is** the care team's work item, a ``Task`` of kind ``refill`` (``workspace/inbox``):
  ``for`` the patient, ``focus`` the MedicationRequest (or the patient's MedicationStatement) to
  refill, ``requester`` who asked, ``input`` the pharmacy (``Organization`` reference, or the name
  the patient typed) and the medicine's name, ``note`` the patient's note; ``performerType`` the
  prescriber's pool (else the pool of the patient's primary-care clinician or care team);
- **approved**: a new active ``MedicationRequest`` (``priorPrescription`` the old one, which is
  completed; ``dispenseRequest.performer`` the pharmacy), the Task ``completed`` with
  ``businessStatus`` *approved* and the new prescription in ``output``;
- **denied**: the Task ``rejected`` with ``businessStatus`` *denied* and the reason in
  ``statusReason.text`` (a denial needs a reason: the patient reads it).

A patient may not write Tasks, so the portal checks with the patient's own access that the medicine
is theirs and then opens the Task on their behalf (``Records.on_behalf``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from housecall import notify
from housecall.fhir.errors import FhirError
from housecall.web.records import Records
from housecall.workspace import inbox

PHARMACY_SYSTEM = "http://nucc.org/provider-taxonomy"
PHARMACY_CODE = "3336C0003X"  # NUCC: Community/Retail Pharmacy
REFILL_SYSTEM = "urn:housecall:refill"  # Task.input types and businessStatus codes
MEDICINE_TYPES = ("MedicationRequest", "MedicationStatement")
MAX_NOTE = 1000
MAX_REASON = 1000
MAX_REFILLS = 11


class Invalid(Exception):
    """A form field that cannot be accepted: ``field`` names it, ``message`` is shown beside it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def medicine_name(resource: dict[str, Any] | None) -> str:
    """What the medicine is called, from its code's text or display (or the reference's display)."""
    if not resource:
        return ""
    concept = resource.get("medicationCodeableConcept") or {}
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    return str((resource.get("medicationReference") or {}).get("display", ""))


def instructions(resource: dict[str, Any]) -> str:
    dosage = resource.get("dosageInstruction") or resource.get("dosage") or []
    return "; ".join(str(d["text"]) for d in dosage if d.get("text"))


@dataclass(frozen=True)
class Medicine:
    ref: str  # "MedicationRequest/x"
    name: str
    how: str  # dosage instructions
    prescriber: str | None  # "Practitioner/x"
    authored: str
    refills_allowed: int | None
    reported: bool  # a MedicationStatement: what the patient said they take


@dataclass(frozen=True)
class Refill:
    """One refill request as the patient and the care team see it."""

    task_id: str
    version: int
    patient_id: str
    focus: str
    medicine: str
    pharmacy: str
    pharmacy_ref: str | None
    note: str
    state: str  # "waiting", "approved", "denied", "cancelled"
    reason: str
    authored: str
    decided: str
    prescription: str | None  # the new MedicationRequest, once approved

    @property
    def open(self) -> bool:
        return self.state == "waiting"


def _input(task: dict[str, Any], code: str) -> dict[str, Any] | None:
    for item in task.get("input") or []:
        for coding in (item.get("type") or {}).get("coding") or []:
            if coding.get("system") == REFILL_SYSTEM and coding.get("code") == code:
                return item  # type: ignore[no-any-return]
    return None


def _business(task: dict[str, Any]) -> str:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == REFILL_SYSTEM:
            return str(coding.get("code"))
    return ""


def refill_of(task: dict[str, Any]) -> Refill:
    pharmacy = _input(task, "pharmacy") or {}
    ref = pharmacy.get("valueReference") or {}
    medicine = _input(task, "medication") or {}
    status = task.get("status", "")
    business = _business(task)
    if status in inbox.OPEN_STATUSES:
        state = "waiting"
    elif status == "completed" and business == "approved":
        state = "approved"
    elif status == "rejected" or business == "denied":
        state = "denied"
    else:
        state = "cancelled"
    prescription = None
    for out in task.get("output") or []:
        target = (out.get("valueReference") or {}).get("reference", "")
        if target.startswith("MedicationRequest/"):
            prescription = target
    notes = task.get("note") or []
    return Refill(
        task_id=task["id"],
        version=int(task["meta"]["versionId"]),
        patient_id=(task.get("for") or {}).get("reference", "").removeprefix("Patient/"),
        focus=(task.get("focus") or {}).get("reference", ""),
        medicine=str(medicine.get("valueString", "")),
        pharmacy=str(ref.get("display") or pharmacy.get("valueString") or ""),
        pharmacy_ref=ref.get("reference"),
        note=str(notes[0].get("text", "")) if notes else "",
        state=state,
        reason=str((task.get("statusReason") or {}).get("text", "")),
        authored=task.get("authoredOn", ""),
        decided=(task.get("executionPeriod") or {}).get("end", ""),
        prescription=prescription,
    )


async def pharmacies(rec: Records) -> list[tuple[str, str]]:
    """(id, name) of the active pharmacies in the organization's directory, by name."""
    page = await rec.search(
        "Organization",
        [
            ("type", f"{PHARMACY_SYSTEM}|{PHARMACY_CODE}"),
            ("active", "true"),
            ("_sort", "name"),
            ("_count", "100"),
        ],
    )
    return [(o["id"], str(o.get("name", o["id"]))) for o in page.resources]


async def medicines(rec: Records, patient_id: str) -> list[Medicine]:
    """The patient's active prescriptions, then the medicines they reported taking."""
    out: list[Medicine] = []
    for res_type in MEDICINE_TYPES:
        page = await rec.search(
            res_type, [("patient", f"Patient/{patient_id}"), ("status", "active"), ("_count", "100")]
        )
        for res in page.resources:
            repeats = (res.get("dispenseRequest") or {}).get("numberOfRepeatsAllowed")
            who = (res.get("requester") or res.get("informationSource") or {}).get("reference")
            out.append(
                Medicine(
                    ref=f"{res_type}/{res['id']}",
                    name=medicine_name(res) or res["id"],
                    how=instructions(res),
                    prescriber=who if who and who.startswith("Practitioner/") else None,
                    authored=res.get("authoredOn") or res.get("dateAsserted") or "",
                    refills_allowed=repeats if isinstance(repeats, int) else None,
                    reported=res_type == "MedicationStatement",
                )
            )
    out.sort(key=lambda m: (m.reported, m.name.lower()))
    return out


async def requests(rec: Records, patient_id: str, *, limit: int = 50) -> list[Refill]:
    """The patient's refill requests, newest first."""
    page = await rec.search(
        "Task",
        [("patient", f"Patient/{patient_id}"), ("code", f"{inbox.WORK_SYSTEM}|refill"),
         ("_sort", "-authored-on"), ("_count", str(limit))],
    )  # fmt: skip
    return [refill_of(t) for t in page.resources]


async def open_count(rec: Records, patient_id: str) -> int:
    page = await rec.search(
        "Task",
        [("patient", f"Patient/{patient_id}"), ("code", f"{inbox.WORK_SYSTEM}|refill"),
         ("status", ",".join(inbox.OPEN_STATUSES)), ("_summary", "count")],
    )  # fmt: skip
    return page.total or 0


async def pool_for(rec: Records, patient_id: str, prescriber: str | None) -> str | None:
    """The pool a refill goes to: the prescriber's, else the patient's primary-care clinician's,
    else that of the first clinician on the patient's care team."""
    candidates: list[str] = []
    if prescriber:
        candidates.append(prescriber)
    patient = await rec.read("Patient", patient_id)
    for ref in (patient or {}).get("generalPractitioner") or []:
        candidates.append(str(ref.get("reference", "")))
    teams = await rec.search("CareTeam", [("patient", f"Patient/{patient_id}"), ("status", "active")])
    for team in teams.resources:
        for part in team.get("participant") or []:
            candidates.append(str((part.get("member") or {}).get("reference", "")))
    for ref in candidates:
        practitioner = ref.removeprefix("Practitioner/") if ref.startswith("Practitioner/") else None
        if ref.startswith("PractitionerRole/"):
            role = await rec.read("PractitionerRole", ref.split("/", 1)[1])
            found = ((role or {}).get("healthcareService") or [{}])[0].get("reference", "")
            if found.startswith("HealthcareService/"):
                return str(found.split("/", 1)[1])
            practitioner = ((role or {}).get("practitioner") or {}).get("reference", "").removeprefix(
                "Practitioner/"
            ) or None
        if practitioner:
            pools = await inbox.pools_of(rec, practitioner)
            if pools:
                return pools[0]
    return None


async def request_refill(
    rec: Records, patient_id: str, medicine_ref: str, *, pharmacy: str, other: str, note: str
) -> dict[str, Any]:
    """Ask for a refill of ``medicine_ref`` (checked with ``rec``, the patient's own access) and put
    the request in the prescriber's pool. Raises ``Invalid`` for a field that cannot be accepted."""
    res_type, _sep, res_id = medicine_ref.partition("/")
    medicine = await rec.read(res_type, res_id) if res_type in MEDICINE_TYPES and res_id else None
    if (
        medicine is None
        or (medicine.get("subject") or {}).get("reference") != f"Patient/{patient_id}"
        or medicine.get("status") != "active"
    ):
        raise Invalid("medication", "unknown")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise Invalid("note", "long")
    item: dict[str, Any] = {
        "type": {"coding": [{"system": REFILL_SYSTEM, "code": "pharmacy"}], "text": "Pharmacy"}
    }
    if pharmacy == "other":
        other = " ".join(other.split())
        if not other:
            raise Invalid("pharmacy_other", "missing")
        if len(other) > 200:
            raise Invalid("pharmacy_other", "long")
        item["valueString"] = other
    else:
        chosen = dict(await pharmacies(rec)).get(pharmacy) if pharmacy else None
        if chosen is None:
            raise Invalid("pharmacy", "missing")
        item["valueReference"] = {"reference": f"Organization/{pharmacy}", "display": chosen}
    for task in await inbox.tasks_for(rec, medicine_ref):
        if inbox.kind_of(task) == "refill":
            raise Invalid("medication", "open")
    name = medicine_name(medicine) or medicine_ref
    requester = (medicine.get("requester") or {}).get("reference")
    service = rec.on_behalf()
    pool = await pool_for(service, patient_id, requester if requester else None)
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": inbox.WORK_SYSTEM, "code": "refill", "display": str(inbox.KINDS["refill"])}]},
        "description": f"Refill: {name}"[:500],
        "for": {"reference": f"Patient/{patient_id}"},
        "focus": {"reference": medicine_ref},
        "authoredOn": inbox._now_iso(),
        "lastModified": inbox._now_iso(),
        "requester": {"reference": rec.actor.fhir_user or f"Patient/{patient_id}"},
        "input": [
            {"type": {"coding": [{"system": REFILL_SYSTEM, "code": "medication"}], "text": "Medication"},
             "valueString": name},
            item,
        ],
    }  # fmt: skip
    if pool:
        task["performerType"] = [{"coding": [{"system": inbox.POOL_SYSTEM, "code": pool}]}]
    if note:
        task["note"] = [{"text": note, "time": inbox._now_iso(), "authorReference": task["requester"]}]
    return await service.create("Task", task)


async def load(rec: Records, task_id: str) -> tuple[Refill, dict[str, Any], dict[str, Any] | None] | None:
    """A refill request, its Task and the medicine it is about, if the actor may see them."""
    task = await rec.read("Task", task_id)
    if task is None or inbox.kind_of(task) != "refill":
        return None
    refill = refill_of(task)
    res_type, _sep, res_id = refill.focus.partition("/")
    medicine = await rec.read(res_type, res_id) if res_type in MEDICINE_TYPES else None
    return refill, task, medicine


def _prescription(
    medicine: dict[str, Any], refill: Refill, me: str, refills: int, note: str
) -> dict[str, Any]:
    """The new MedicationRequest an approval writes, from the medicine being refilled."""
    new: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{refill.patient_id}"},
        "authoredOn": inbox._now_iso(),
        "requester": {"reference": me},
    }
    for key in (
        "category",
        "medicationCodeableConcept",
        "medicationReference",
        "reasonCode",
        "reasonReference",
    ):
        if key in medicine:
            new[key] = medicine[key]
    dosage = medicine.get("dosageInstruction") or medicine.get("dosage")
    if dosage:
        new["dosageInstruction"] = dosage
    dispense = dict(medicine.get("dispenseRequest") or {})
    dispense.pop("validityPeriod", None)
    dispense["numberOfRepeatsAllowed"] = refills
    if refill.pharmacy_ref:
        dispense["performer"] = {"reference": refill.pharmacy_ref, "display": refill.pharmacy}
    new["dispenseRequest"] = dispense
    if medicine["resourceType"] == "MedicationRequest":
        new["priorPrescription"] = {"reference": f"MedicationRequest/{medicine['id']}"}
    if note:
        new["note"] = [{"text": note, "authorReference": {"reference": me}, "time": inbox._now_iso()}]
    return new


async def _decide(rec: Records, task: dict[str, Any], version: int, me: str, update: dict[str, Any]) -> None:
    if int(task["meta"]["versionId"]) != version or task.get("status") not in inbox.OPEN_STATUSES:
        raise inbox.Conflict(task["id"])
    task.update(update)
    task["owner"] = task.get("owner") or {"reference": me}
    task.setdefault("executionPeriod", {})["end"] = inbox._now_iso()
    task["lastModified"] = inbox._now_iso()
    try:
        await rec.update(task, version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise inbox.Conflict(task["id"]) from None
        raise


async def approve(
    rec: Records, task_id: str, version: int, me: str, *, refills: str, note: str
) -> dict[str, Any]:
    """Approve on the version the page showed: a new prescription, the old one completed, the Task
    done and the patient told. Returns the new MedicationRequest."""
    found = await load(rec, task_id)
    if found is None:
        raise LookupError(task_id)
    refill, task, medicine = found
    if medicine is None:
        raise LookupError(refill.focus)
    count = refills.strip()
    if not count.isdigit() or int(count) > MAX_REFILLS:
        raise Invalid("refills", "range")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise Invalid("pharmacy_note", "long")
    new = await rec.create("MedicationRequest", _prescription(medicine, refill, me, int(count), note))
    await _decide(rec, task, version, me, {
        "status": "completed",
        "businessStatus": {"coding": [{"system": REFILL_SYSTEM, "code": "approved"}], "text": "Approved"},
        "output": [{"type": {"coding": [{"system": REFILL_SYSTEM, "code": "prescription"}], "text": "Prescription"},
                    "valueReference": {"reference": f"MedicationRequest/{new['id']}"}}],
    })  # fmt: skip
    if medicine["resourceType"] == "MedicationRequest" and medicine.get("status") == "active":
        medicine["status"] = "completed"
        try:
            await rec.update(medicine, version=int(medicine["meta"]["versionId"]))
        except FhirError as exc:
            if exc.status == 412:  # changed since it was read: decide again on what it is now
                raise inbox.Conflict(task_id) from None
            raise
    await notify.tell_patient(
        rec.conn, rec.actor.org_id, refill.patient_id, notify.Kind.REFILL_DECIDED, "/portal/medications"
    )
    return new


async def deny(rec: Records, task_id: str, version: int, me: str, *, reason: str) -> None:
    """Deny on the version the page showed, with the reason the patient will read."""
    reason = reason.strip()
    if not reason:
        raise Invalid("reason", "missing")
    if len(reason) > MAX_REASON:
        raise Invalid("reason", "long")
    found = await load(rec, task_id)
    if found is None:
        raise LookupError(task_id)
    refill, task, _medicine = found
    await _decide(rec, task, version, me, {
        "status": "rejected",
        "businessStatus": {"coding": [{"system": REFILL_SYSTEM, "code": "denied"}], "text": "Denied"},
        "statusReason": {"text": reason},
    })  # fmt: skip
    await notify.tell_patient(
        rec.conn, rec.actor.org_id, refill.patient_id, notify.Kind.REFILL_DECIDED, "/portal/medications"
    )
