"""After the visit (docs/decisions/0019): the clinician's note, the after-visit summary with what
was decided (diagnoses, prescriptions, orders, a follow-up), and the patient's rating.

How it is written down, so the same facts show on the FHIR API:

- **The visit note** is a ``DocumentReference`` (LOINC 11506-3 Progress note, category
  ``clinical-note``, ``context.encounter`` → the visit's Encounter, ``author`` the clinician).
  Its first attachment is the note as plain text; the second (``application/json``, format
  ``visit-note``) keeps the sections as typed, so a draft can be edited again. ``docStatus``
  ``preliminary`` while a draft, ``final`` once signed; a signed note is not changed here.
- **The after-visit summary** is a ``DocumentReference`` of LOINC 34133-9 Summary of episode note
  (what the demo data already uses for after-visit summaries), the same two attachments. When it
  is signed, the diagnoses become ``Condition`` (category ``encounter-diagnosis``, ``encounter``
  set), prescriptions ``MedicationRequest`` and orders ``ServiceRequest`` of the Encounter, the
  follow-up a ``ServiceRequest`` the patient books from the portal; the patient is told (no health
  information in the text) and, when the visit was not with the patient's primary care
  practitioner (``Patient.generalPractitioner``), a ``visit-summary`` Task goes to that
  practitioner's pool with the summary as focus.
- **The rating** is a ``QuestionnaireResponse`` to ``QUESTIONNAIRE`` (written by the patient,
  ``encounter`` set); technical problems open a ``tech-problem`` Task in the visit clinician's pool.

Every change is made on the version the form was read from (If-Match): two people editing the
same draft get one save and one "someone changed it".
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from housecall.fhir.errors import FhirError
from housecall.visits.service import HC, Visit, iso, now_dt
from housecall.web.i18n import Msg, _
from housecall.web.records import Records
from housecall.workspace import inbox
from housecall.workspace.inbox import person_name

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
FORMAT_SYSTEM = f"{HC}/fhir/CodeSystem/visit-document"
AFTER_SYSTEM = f"{HC}/fhir/CodeSystem/visit-after"
QUESTIONNAIRE = f"{HC}/fhir/Questionnaire/visit-feedback"
NOTE = "note"
SUMMARY = "summary"
DOC_TYPES = {
    NOTE: ("11506-3", "Progress note", Msg("Visit note")),
    SUMMARY: ("34133-9", "Summary of episode note", Msg("After-visit summary")),
}
TEXT_LIMIT = 10_000  # characters per section or field
LINES_LIMIT = 20  # prescriptions, orders or typed diagnoses per summary

# -- the note's templates (data) ---------------------------------------------------------------------

# Section key -> (heading, hint). Headings are written into the note in the clinician's language.
SECTIONS: dict[str, tuple[str, str]] = {
    "subjective": (Msg("Subjective"), Msg("What the patient tells: the reason for the visit, symptoms, history.")),
    "objective": (Msg("Objective"), Msg("What you saw and measured, and how (on camera, home readings).")),
    "objective-audio": (Msg("Objective"), Msg("What you heard and what the patient measured at home (no video).")),
    "assessment": (Msg("Assessment"), Msg("Your assessment and the diagnoses.")),
    "plan": (Msg("Plan"), Msg("Treatment, prescriptions, orders, what the patient will do, follow-up.")),
    "history": (Msg("History"), Msg("Past history, medications and allergies reviewed with the patient.")),
    "risk": (Msg("Safety and risk"), Msg("Risk to self or others, and the safety plan agreed.")),
    "modality": (Msg("How the visit was held"), Msg("Video, audio or phone; consent to a telehealth visit; who else was present.")),
}  # fmt: skip
# The visit's modality (the last one of the Encounter's modality history) -> its sections.
TEMPLATES: dict[str, list[str]] = {
    "video": ["subjective", "objective", "assessment", "plan", "modality"],
    "audio": ["subjective", "objective-audio", "assessment", "plan", "modality"],
    "phone": ["subjective", "objective-audio", "assessment", "plan", "modality"],
    "chat": ["subjective", "assessment", "plan"],  # e-visits, once they exist
}
# A word of the Appointment's service type (its text or display) -> sections added before the plan.
SERVICE_SECTIONS: dict[str, list[str]] = {
    "new": ["history"],
    "mental": ["risk"],
    "behavioral": ["risk"],
    "psychiatr": ["risk"],
}

# The diagnoses a clinician picks from (ICD-10-CM); anything else is typed, "CODE text" or text.
COMMON_DIAGNOSES: list[tuple[str, str]] = [
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("J02.9", "Acute pharyngitis, unspecified"),
    ("J30.9", "Allergic rhinitis, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("I10", "Essential (primary) hypertension"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("F41.1", "Generalized anxiety disorder"),
    ("M54.50", "Low back pain, unspecified"),
    ("R51.9", "Headache, unspecified"),
    ("L30.9", "Dermatitis, unspecified"),
]
FOLLOW_UP_WEEKS = (1, 2, 4, 6, 8, 12, 26)
TECH_PROBLEMS: dict[str, str] = {
    "no-video": Msg("No video"),
    "no-sound": Msg("No sound"),
    "dropped": Msg("The call dropped"),
    "other": Msg("Something else"),
}


class AfterError(Exception):
    """A rule refused the change; ``code`` says which (the page words it)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def template_for(visit: Visit) -> list[str]:
    """The note's sections for this visit: by how it was held, plus those its service type adds."""
    keys = list(TEMPLATES.get(visit.modality, TEMPLATES["video"]))
    service_words = " ".join(
        str(c.get("text") or "") + " " + " ".join(str(x.get("display") or "") for x in c.get("coding") or [])
        for c in visit.appointment.get("serviceType") or []
    ).lower()
    extra: list[str] = []
    for word, sections in SERVICE_SECTIONS.items():
        if word in service_words:
            extra += [s for s in sections if s not in extra and s not in keys]
    at = keys.index("plan") if "plan" in keys else len(keys)
    return keys[:at] + extra + keys[at:]


# -- documents --------------------------------------------------------------------------------------


@dataclass
class Doc:
    """A note or a summary of the visit: the resource, its version and the fields as typed."""

    resource: dict[str, Any]
    version: int
    fields: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.resource["id"])

    @property
    def final(self) -> bool:
        return self.resource.get("docStatus") == "final"


def _fields_of(doc: dict[str, Any]) -> dict[str, Any]:
    for content in doc.get("content") or []:
        attachment = content.get("attachment") or {}
        if attachment.get("contentType") == "application/json" and attachment.get("data"):
            try:
                data = orjson.loads(base64.b64decode(attachment["data"]))
            except (ValueError, orjson.JSONDecodeError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def kind_of(doc: dict[str, Any]) -> str | None:
    for c in (doc.get("type") or {}).get("coding") or []:
        for kind, (code, _display, _text) in DOC_TYPES.items():
            if c.get("system") == LOINC and c.get("code") == code:
                return kind
    return None


async def documents(rec: Records, visit: Visit) -> dict[str, Doc]:
    """The visit's note and summary (kind -> Doc), as the reader may see them."""
    if visit.encounter is None:
        return {}
    page = await rec.search(
        "DocumentReference",
        [("encounter", f"Encounter/{visit.encounter['id']}"), ("status", "current"), ("_count", "20")],
    )
    out: dict[str, Doc] = {}
    for doc in page.resources:
        kind = kind_of(doc)
        if kind and kind not in out:
            out[kind] = Doc(doc, int(doc["meta"]["versionId"]), _fields_of(doc))
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _document(visit: Visit, kind: str, author: str, text: str, fields: dict[str, Any], *, final: bool,
              title: str) -> dict[str, Any]:  # fmt: skip
    assert visit.encounter is not None
    code, display, label = DOC_TYPES[kind]
    when = iso(now_dt())
    period = visit.encounter.get("period") or {}
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final" if final else "preliminary",
        "type": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": str(_(label))},
        "category": [{"coding": [{"system": DOC_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}]}],
        "subject": {"reference": f"Patient/{visit.patient_id}"},
        "date": when,
        "author": [{"reference": author}],
        "description": title,
        "content": [
            {"attachment": {"contentType": "text/plain; charset=utf-8", "data": _b64(text.encode()),
                            "title": title, "creation": when}},
            {"attachment": {"contentType": "application/json", "data": _b64(orjson.dumps(fields))},
             "format": {"system": FORMAT_SYSTEM, "code": f"visit-{kind}"}},
        ],
        "context": {"encounter": [{"reference": f"Encounter/{visit.encounter['id']}"}],
                    **({"period": period} if period else {})},
    }  # fmt: skip


async def _save(rec: Records, visit: Visit, kind: str, author: str, text: str, fields: dict[str, Any], *,
                final: bool, version: int | None, title: str) -> Doc:  # fmt: skip
    """Create the visit's document, or update it on the version the form was read from."""
    if visit.encounter is None:
        raise AfterError("no-encounter")
    existing = (await documents(rec, visit)).get(kind)
    resource = _document(visit, kind, author, text, fields, final=final, title=title)
    if existing is None:
        stored = await rec.create("DocumentReference", resource)
        return Doc(stored, int(stored["meta"]["versionId"]), fields)
    if existing.final:
        raise AfterError("signed")
    if version is None or version != existing.version:
        raise AfterError("conflict")
    resource["id"] = existing.id
    try:
        stored = await rec.update(resource, version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise AfterError("conflict") from None
        raise
    return Doc(stored, int(stored["meta"]["versionId"]), fields)


def _clip(value: str) -> str:
    return value.strip().replace("\r\n", "\n")[:TEXT_LIMIT]


def _title(kind: str, visit: Visit) -> str:
    day = visit.start.date().isoformat() if visit.start else now_dt().date().isoformat()
    return f"{_(DOC_TYPES[kind][2])} {day}"


# -- the note ---------------------------------------------------------------------------------------


def note_text(sections: list[str], values: dict[str, str]) -> str:
    parts = []
    for key in sections:
        body = values.get(key, "").strip()
        if body:
            parts.append(f"{_(SECTIONS[key][0])}\n{body}")
    return "\n\n".join(parts) + "\n"


async def save_note(rec: Records, visit: Visit, *, author: str, values: dict[str, str], final: bool,
                    version: int | None) -> Doc:  # fmt: skip
    """Save the note as a draft or sign it. ``values``: section key -> text. A signed note needs
    an assessment and a plan."""
    sections = template_for(visit)
    clean = {k: _clip(values.get(k, "")) for k in sections}
    if final:
        missing = [k for k in ("assessment", "plan") if k in sections and not clean[k]]
        if missing:
            raise AfterError("missing:" + ",".join(missing))
    if not any(clean.values()):
        raise AfterError("missing:" + sections[0])
    fields = {"template": visit.modality, "sections": sections, "values": clean}
    return await _save(rec, visit, NOTE, author, note_text(sections, clean), fields, final=final,
                       version=version, title=_title(NOTE, visit))  # fmt: skip


# -- the summary ------------------------------------------------------------------------------------


@dataclass
class SummaryForm:
    """What the clinician typed in the summary form."""

    diagnoses: list[str] = field(default_factory=list)  # codes from COMMON_DIAGNOSES
    other_diagnoses: str = ""  # one a line: "CODE text" or text
    instructions: str = ""
    prescriptions: str = ""  # one a line: "medication — directions"
    orders: str = ""  # one a line
    follow_up_weeks: int | None = None
    follow_up_note: str = ""

    def as_fields(self) -> dict[str, Any]:
        return {"diagnoses": self.diagnoses, "other_diagnoses": self.other_diagnoses,
                "instructions": self.instructions, "prescriptions": self.prescriptions, "orders": self.orders,
                "follow_up_weeks": self.follow_up_weeks, "follow_up_note": self.follow_up_note}  # fmt: skip

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> SummaryForm:
        weeks = data.get("follow_up_weeks")
        return cls(
            diagnoses=[str(d) for d in data.get("diagnoses") or [] if isinstance(d, str)],
            other_diagnoses=str(data.get("other_diagnoses") or ""),
            instructions=str(data.get("instructions") or ""),
            prescriptions=str(data.get("prescriptions") or ""),
            orders=str(data.get("orders") or ""),
            follow_up_weeks=weeks if isinstance(weeks, int) else None,
            follow_up_note=str(data.get("follow_up_note") or ""),
        )


ICD_CODE = re.compile(r"^([A-TV-Z][0-9][0-9AB](?:\.[0-9A-Z]{1,4})?)\s+(.+)$")


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()][:LINES_LIMIT]


def diagnosis_concepts(form: SummaryForm) -> list[dict[str, Any]]:
    """The diagnoses as CodeableConcepts: the picked ones coded in ICD-10-CM, typed ones coded when
    they start with an ICD-10-CM code, else text only."""
    common = dict(COMMON_DIAGNOSES)
    out = [{"coding": [{"system": ICD10, "code": code, "display": common[code]}], "text": common[code]}
           for code in form.diagnoses if code in common]  # fmt: skip
    for line in lines(form.other_diagnoses):
        match = ICD_CODE.match(line)
        if match:
            out.append({"coding": [{"system": ICD10, "code": match.group(1)}], "text": match.group(2)[:200]})
        else:
            out.append({"text": line[:200]})
    return out


def check_summary(form: SummaryForm, *, final: bool) -> dict[str, str]:
    """Field -> error code; a signed summary needs a diagnosis and instructions."""
    errors: dict[str, str] = {}
    if any(code not in dict(COMMON_DIAGNOSES) for code in form.diagnoses):
        errors["diagnoses"] = "unknown"
    if form.follow_up_weeks is not None and form.follow_up_weeks not in FOLLOW_UP_WEEKS:
        errors["follow_up_weeks"] = "unknown"
    if len(form.other_diagnoses.splitlines()) > LINES_LIMIT:
        errors["other_diagnoses"] = "too-many"
    for name in ("prescriptions", "orders"):
        if len(getattr(form, name).splitlines()) > LINES_LIMIT:
            errors[name] = "too-many"
    if not final and not any(form.as_fields().values()):
        errors["instructions"] = "empty"
    if final:
        if not diagnosis_concepts(form):
            errors.setdefault("diagnoses", "missing")
        if not form.instructions.strip():
            errors["instructions"] = "missing"
    return errors


def summary_text(visit: Visit, form: SummaryForm, clinician: str, existing: list[str]) -> str:
    """The summary as the patient reads it (and the PDF prints it)."""
    out = []
    when = visit.start.date().isoformat() if visit.start else ""
    out.append(_("Your visit on %(day)s with %(name)s.") % {"day": when, "name": clinician})
    dx = [c.get("text") or "" for c in diagnosis_concepts(form)]
    if dx:
        out.append(_("What we found") + "\n" + "\n".join(f"- {d}" for d in dx))
    if form.instructions.strip():
        out.append(_("What to do") + "\n" + form.instructions.strip())
    rx = lines(form.prescriptions)
    if rx:
        out.append(_("Prescriptions") + "\n" + "\n".join(f"- {r}" for r in rx))
    orders = lines(form.orders) + existing
    if orders:
        out.append(_("Tests and referrals ordered") + "\n" + "\n".join(f"- {o}" for o in orders))
    if form.follow_up_weeks:
        text = _("Book a follow-up visit in %(n)s weeks.") % {"n": form.follow_up_weeks}
        if form.follow_up_note.strip():
            text += "\n" + form.follow_up_note.strip()
        out.append(_("Follow-up") + "\n" + text)
    return "\n\n".join(out) + "\n"


async def existing_orders(rec: Records, visit: Visit) -> list[str]:
    """What was already prescribed or ordered at this visit elsewhere (not by this summary)."""
    if visit.encounter is None:
        return []
    ref = f"Encounter/{visit.encounter['id']}"
    out = []
    for res_type in ("MedicationRequest", "ServiceRequest"):
        for res in await rec.search(res_type, [("encounter", ref), ("_count", "50")]):
            if _made_by_summary(res):
                continue
            concept = res.get("medicationCodeableConcept") or res.get("code") or {}
            text = concept.get("text") or next((c.get("display") for c in concept.get("coding") or []), "")
            if text:
                out.append(str(text))
    return out


def _made_by_summary(res: dict[str, Any]) -> bool:
    return any(i.get("system") == AFTER_SYSTEM for i in res.get("identifier") or [])


def _tag(doc_id: str, n: int) -> list[dict[str, str]]:
    return [{"system": AFTER_SYSTEM, "value": f"{doc_id}-{n}"}]


async def save_summary(rec: Records, visit: Visit, *, author: str, form: SummaryForm, final: bool,
                       version: int | None) -> Doc:  # fmt: skip
    """Save the summary as a draft, or sign it: then its diagnoses, prescriptions, orders and the
    follow-up are stored as resources of the Encounter. The caller tells the patient and the
    primary care team (``share``)."""
    if check_summary(form, final=final):
        raise AfterError("invalid")
    clinician = person_name(await rec.read(*author.split("/", 1))) if "/" in author else ""
    existing = await existing_orders(rec, visit)
    text = summary_text(visit, form, clinician, existing)
    doc = await _save(rec, visit, SUMMARY, author, text, form.as_fields(), final=final, version=version,
                      title=_title(SUMMARY, visit))  # fmt: skip
    if final:
        await _record_decisions(rec, visit, author, form, doc.id)
    return doc


async def _record_decisions(rec: Records, visit: Visit, author: str, form: SummaryForm, doc_id: str) -> None:
    assert visit.encounter is not None
    patient = {"reference": f"Patient/{visit.patient_id}"}
    encounter = {"reference": f"Encounter/{visit.encounter['id']}"}
    today = iso(now_dt())
    n = 0
    for concept in diagnosis_concepts(form):
        n += 1
        await rec.create("Condition", {
            "resourceType": "Condition", "identifier": _tag(doc_id, n),
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis",
                                      "display": "Encounter Diagnosis"}]}],
            "code": concept, "subject": patient, "encounter": encounter, "recordedDate": today,
            "recorder": {"reference": author}, "asserter": {"reference": author},
        })  # fmt: skip
    for line in lines(form.prescriptions):
        n += 1
        medication, _sep, directions = _split_directions(line)
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest", "identifier": _tag(doc_id, n), "status": "active",
            "intent": "order", "medicationCodeableConcept": {"text": medication[:200]}, "subject": patient,
            "encounter": encounter, "authoredOn": today, "requester": {"reference": author},
        }  # fmt: skip
        if directions:
            request["dosageInstruction"] = [{"text": directions[:500]}]
        await rec.create("MedicationRequest", request)
    for line in lines(form.orders):
        n += 1
        await rec.create("ServiceRequest", {
            "resourceType": "ServiceRequest", "identifier": _tag(doc_id, n), "status": "active",
            "intent": "order", "code": {"text": line[:200]}, "subject": patient, "encounter": encounter,
            "authoredOn": today, "requester": {"reference": author},
        })  # fmt: skip
    if form.follow_up_weeks:
        n += 1
        await rec.create("ServiceRequest", follow_up_request(visit, form, author, doc_id, n))


def _split_directions(line: str) -> tuple[str, str, str]:
    """ "Amoxicillin 500 mg — one capsule three times a day" → (medication, sep, directions)."""
    parts = re.split(r"\s+[\u2014\u2013-]\s+|:\s+", line, maxsplit=1)
    return (parts[0].strip(), "", parts[1].strip()) if len(parts) == 2 else (line.strip(), "", "")


FOLLOW_UP_CODE = {"system": SNOMED, "code": "390906007", "display": "Follow-up encounter"}


def follow_up_request(visit: Visit, form: SummaryForm, author: str, doc_id: str, n: int) -> dict[str, Any]:
    """The follow-up as a request the patient books: when (a week either side of N weeks from the
    visit), with whom (the visit's clinician) and which kind of visit (the visit's service type)."""
    assert visit.encounter is not None
    assert form.follow_up_weeks
    base = visit.start or now_dt()
    target = base + dt.timedelta(weeks=form.follow_up_weeks)
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest", "identifier": _tag(doc_id, n), "status": "active", "intent": "order",
        "category": [{"coding": [{"system": AFTER_SYSTEM, "code": "follow-up"}]}],
        "code": {"coding": [FOLLOW_UP_CODE], "text": str(_("Follow-up visit"))},
        "subject": {"reference": f"Patient/{visit.patient_id}"},
        "encounter": {"reference": f"Encounter/{visit.encounter['id']}"},
        "occurrencePeriod": {"start": (target - dt.timedelta(days=7)).date().isoformat(),
                             "end": (target + dt.timedelta(days=7)).date().isoformat()},
        "authoredOn": iso(now_dt()), "requester": {"reference": author},
        "performer": [{"reference": p} for p in visit.practitioners[:1]],
    }  # fmt: skip
    if form.follow_up_note.strip():
        request["patientInstruction"] = form.follow_up_note.strip()[:500]
    if visit.appointment.get("serviceType"):
        request["orderDetail"] = list(visit.appointment["serviceType"])[:1]
    return request


async def follow_ups(rec: Records, visit: Visit) -> list[dict[str, Any]]:
    """The visit's open follow-up requests."""
    if visit.encounter is None:
        return []
    page = await rec.search(
        "ServiceRequest",
        [("encounter", f"Encounter/{visit.encounter['id']}"), ("category", f"{AFTER_SYSTEM}|follow-up"),
         ("status", "active"), ("_count", "10")],
    )  # fmt: skip
    return page.resources


async def share_with_primary_care(
    rec: Records, visit: Visit, doc: Doc, *, author: str
) -> dict[str, Any] | None:
    """When the patient's primary care practitioner is not a clinician of this visit, put the signed
    summary in their pool's inbox (a ``visit-summary`` Task, the summary as focus). Returns it."""
    patient = await rec.on_behalf().read("Patient", str(visit.patient_id))
    pcps = [g.get("reference", "") for g in (patient or {}).get("generalPractitioner") or []]
    pcps = [p for p in pcps if p.startswith("Practitioner/")]
    if not pcps or any(p in visit.practitioners for p in pcps):
        return None
    writer = rec.on_behalf()
    pools = await inbox.pools_of(writer, pcps[0].removeprefix("Practitioner/"))
    clinician = person_name(await writer.read(*author.split("/", 1))) if "/" in author else ""
    day = visit.start.date().isoformat() if visit.start else ""
    description = (
        f"After-visit summary of the virtual visit on {day} with {clinician}, for the primary care team."
    )
    return await inbox.open_task(
        writer, "visit-summary", patient_id=str(visit.patient_id), focus=f"DocumentReference/{doc.id}",
        pool=pools[0] if pools else None, description=description, requester=author,
    )  # fmt: skip


# -- the patient's rating ---------------------------------------------------------------------------


QUESTIONNAIRE_RESOURCE: dict[str, Any] = {
    "resourceType": "Questionnaire",
    "url": QUESTIONNAIRE,
    "version": "1",
    "name": "VisitFeedback",
    "title": "How was your visit?",
    "status": "active",
    "subjectType": ["Patient"],
    "item": [
        {"linkId": "rating", "text": "How would you rate the visit? (1 poor - 5 excellent)", "type": "integer",
         "required": True},
        {"linkId": "comment", "text": "Anything you want to tell us", "type": "text"},
        {"linkId": "problems", "text": "Technical problems", "type": "choice", "repeats": True,
         "answerOption": [{"valueCoding": {"system": AFTER_SYSTEM, "code": code}} for code in TECH_PROBLEMS]},
    ],
}  # fmt: skip


@dataclass
class Feedback:
    rating: int | None = None
    comment: str = ""
    problems: list[str] = field(default_factory=list)


def check_feedback(fb: Feedback) -> dict[str, str]:
    errors = {}
    if fb.rating is None or not 1 <= fb.rating <= 5:
        errors["rating"] = "missing"
    if any(p not in TECH_PROBLEMS for p in fb.problems):
        errors["problems"] = "unknown"
    return errors


async def feedback_of(rec: Records, visit: Visit) -> dict[str, Any] | None:
    if visit.encounter is None:
        return None
    page = await rec.search(
        "QuestionnaireResponse",
        [
            ("encounter", f"Encounter/{visit.encounter['id']}"),
            ("questionnaire", QUESTIONNAIRE),
            ("_count", "1"),
        ],
    )
    return page.resources[0] if page.resources else None


async def record_feedback(rec: Records, visit: Visit, fb: Feedback, *, author: str) -> dict[str, Any]:
    """Store the patient's rating (once per visit, after it ended), and open a ``tech-problem``
    Task in the clinician's pool when they report problems. Returns the QuestionnaireResponse."""
    if visit.status != "finished" or visit.encounter is None:
        raise AfterError("not-ended")
    if check_feedback(fb):
        raise AfterError("invalid")
    if await feedback_of(rec, visit) is not None:
        raise AfterError("already")
    items: list[dict[str, Any]] = [{"linkId": "rating", "answer": [{"valueInteger": fb.rating}]}]
    if fb.comment.strip():
        items.append({"linkId": "comment", "answer": [{"valueString": fb.comment.strip()[:2000]}]})
    if fb.problems:
        items.append({"linkId": "problems", "answer": [
            {"valueCoding": {"system": AFTER_SYSTEM, "code": p, "display": str(TECH_PROBLEMS[p])}}
            for p in fb.problems]})  # fmt: skip
    response = await rec.create("QuestionnaireResponse", {
        "resourceType": "QuestionnaireResponse", "questionnaire": QUESTIONNAIRE, "status": "completed",
        "subject": {"reference": f"Patient/{visit.patient_id}"},
        "encounter": {"reference": f"Encounter/{visit.encounter['id']}"},
        "authored": iso(now_dt()), "author": {"reference": author}, "item": items,
    })  # fmt: skip
    if fb.problems:
        writer = rec.on_behalf()
        pools = (
            await inbox.pools_of(writer, visit.practitioners[0].removeprefix("Practitioner/"))
            if visit.practitioners else []
        )  # fmt: skip
        said = ", ".join(TECH_PROBLEMS[p] for p in fb.problems)  # English: the inbox's record
        day = visit.start.date().isoformat() if visit.start else ""
        await inbox.open_task(
            writer, "tech-problem", patient_id=str(visit.patient_id),
            focus=f"QuestionnaireResponse/{response['id']}", pool=pools[0] if pools else None,
            description=f"Technical problems reported for the virtual visit on {day}: {said}.", requester=author,
        )  # fmt: skip
    return response


def rating_of(response: dict[str, Any] | None) -> tuple[int | None, str, list[str]]:
    """(rating, comment, problem codes) of a stored response."""
    rating, comment, problems = None, "", []
    for item in (response or {}).get("item") or []:
        for answer in item.get("answer") or []:
            if item.get("linkId") == "rating":
                rating = answer.get("valueInteger")
            elif item.get("linkId") == "comment":
                comment = str(answer.get("valueString") or "")
            elif item.get("linkId") == "problems":
                problems.append(str((answer.get("valueCoding") or {}).get("code")))
    return rating, comment, problems
