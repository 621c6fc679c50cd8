"""Forms sent ahead of a virtual visit (docs/decisions/0020): an intake questionnaire per visit
type and the consent to telehealth.

- **Questionnaires are FHIR ``Questionnaire`` resources of the organization**, seeded on first use
  (``ensure_questionnaires``): the general intake (``visit-intake``) with conditional questions
  (``enableWhen``: "Do you have pain?" → where, how bad 0 to 10) and the telehealth consent
  (``telehealth-consent``). An organization may add an intake of its own for one kind of visit: a
  Questionnaire whose ``useContext`` (code ``focus``) names the visit's service type as text is
  used instead of the general one.
- **Answers are ``QuestionnaireResponse``s** in the patient's record, written by the patient (or
  proxy) through ``web/records`` with the access path and audit trail as for anything else they
  write. R4 ``basedOn`` cannot point at an Appointment, so a response names its visit twice: the
  ``questionnaireresponse-appointment`` extension (the reference) and an ``identifier``
  (``visit-forms|<appointment>/<form>``) that makes "is it done?" one indexed search.
- **Consent is a ``Consent``** (scope ``treatment``, category LOINC 59284-0 and Housecall's
  ``telehealth``, ``provision.type`` permit for a year, ``sourceReference`` → the response): it is
  the patient's standing consent, so one covers every virtual visit in its period. It names no
  ``provision.actor``, so it never grants anyone access (decision 0010 reads only those that do).
- **Conditional questions are decided on the server**: a question whose ``enableWhen`` does not
  hold for the answers given is neither required nor kept; the page shows every question (the
  conditional ones say when they apply), and ``forms.js`` hides those that do not apply.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from housecall.access.policy import Access
from housecall.core.db import Conn
from housecall.core.settings import Settings
from housecall.fhir import interactions as ix
from housecall.identity.clock import clock
from housecall.visits.before import is_virtual
from housecall.visits.service import EXT, HC
from housecall.web.i18n import Msg, _
from housecall.web.records import Records

FORMS_SYSTEM = f"{HC}/fhir/visit-forms"
APPOINTMENT_EXT = EXT + "questionnaireresponse-appointment"
INTAKE_URL = f"{HC}/fhir/Questionnaire/visit-intake"
CONSENT_URL = f"{HC}/fhir/Questionnaire/telehealth-consent"
CONSENT_CATEGORY = f"{HC}/fhir/CodeSystem/consent-category"
CONSENT_POLICY = f"{HC}/policy/telehealth-consent/v1"
USAGE_CONTEXT = "http://terminology.hl7.org/CodeSystem/usage-context-type"
INTAKE, CONSENT = "intake", "consent"
TEXT_LIMIT = {"string": 200, "text": 2000}


def _q(link: str, text: str, kind: str, *, required: bool = False, **more: Any) -> dict[str, Any]:
    return {"linkId": link, "text": text, "type": kind, "required": required, **more}


def _when(link: str, value: bool) -> list[dict[str, Any]]:
    return [{"question": link, "operator": "=", "answerBoolean": value}]


# The seeded forms. The texts are English in the store (FHIR's own language) and marked here, so
# the pages show them in the reader's language.
SEED: list[dict[str, Any]] = [
    {
        "resourceType": "Questionnaire", "url": INTAKE_URL, "version": "1", "name": "VisitIntake",
        "title": Msg("Before your visit"), "status": "active", "subjectType": ["Patient"],
        "description": "Intake questions for a video or phone visit.",
        "item": [
            _q("reason", Msg("What would you like to talk about at this visit?"), "text", required=True),
            _q("pain", Msg("Do you have pain?"), "boolean", required=True),
            _q("pain-where", Msg("Where is the pain?"), "string", required=True, enableWhen=_when("pain", True)),
            _q("pain-score", Msg("How bad is the pain, from 0 (none) to 10 (the worst)?"), "integer", required=True,
               enableWhen=_when("pain", True),
               extension=[{"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0},
                          {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 10}]),
            _q("medicines-changed", Msg("Have your medicines changed since your last visit?"), "boolean"),
            _q("other", Msg("Anything else your clinician should know?"), "text"),
        ],
    },
    {
        "resourceType": "Questionnaire", "url": CONSENT_URL, "version": "1", "name": "TelehealthConsent",
        "title": Msg("Consent to telehealth"), "status": "active", "subjectType": ["Patient"],
        "description": "The patient's consent to care by video, phone or chat.",
        "item": [
            _q("about", Msg("A telehealth visit happens by video, phone or chat instead of in person. Your clinician may decide you need to be seen in person. The call is encrypted and is not recorded. You can stop at any time and ask for an in-person visit."), "display"),
            _q("agree", Msg("I agree to receive care by video, phone or chat."), "boolean", required=True),
        ],
    },
]  # fmt: skip


def _plain(value: Any) -> Any:
    """The seed with marked texts as plain strings (JSON for the store)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


async def ensure_questionnaires(conn: Conn, settings: Settings, org_id: str) -> None:
    """Create the seeded Questionnaires the organization does not have yet (as its system)."""
    ctx = ix.Ctx(conn, settings, settings.public_url.rstrip("/") + "/fhir", Access.system(org_id))
    for q in SEED:
        found = await ix.search(ctx, ix.search_request(ctx, "Questionnaire", [("url", q["url"])]))
        if not found.matches:
            await ix.create(ctx, "Questionnaire", _plain(q))


# -- the forms of a visit -----------------------------------------------------------------------------


@dataclass
class Form:
    """One form of a visit: which, its Questionnaire, and the answers given so far (if any)."""

    slug: str  # intake | consent
    questionnaire: dict[str, Any]
    response: dict[str, Any] | None = None
    done: bool = False

    @property
    def title(self) -> str:
        return _(str(self.questionnaire.get("title") or self.questionnaire.get("name") or ""))


def patient_of(appointment: dict[str, Any]) -> str | None:
    for p in appointment.get("participant") or []:
        ref = str((p.get("actor") or {}).get("reference") or "")
        if ref.startswith("Patient/"):
            return ref.removeprefix("Patient/")
    return None


def _service_texts(appointment: dict[str, Any]) -> set[str]:
    out = set()
    for concept in appointment.get("serviceType") or []:
        if concept.get("text"):
            out.add(str(concept["text"]))
        out.update(str(c["display"]) for c in concept.get("coding") or [] if c.get("display"))
    return out


def _for_service(q: dict[str, Any], services: set[str]) -> bool:
    """Whether the Questionnaire's ``useContext`` (UsageContext.code is a Coding) names one of the
    visit's services as its focus."""
    for ctx in q.get("useContext") or []:
        if (ctx.get("code") or {}).get("code") == "focus" and (ctx.get("valueCodeableConcept") or {}).get(
            "text"
        ) in services:
            return True
    return False


def _identifier(appointment_id: str, slug: str) -> str:
    return f"{appointment_id}/{slug}"


def _when_dt(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _consent_covers(consent: dict[str, Any], at: dt.datetime) -> bool:
    if consent.get("status") != "active" or (consent.get("provision") or {}).get("type") != "permit":
        return False
    period = (consent.get("provision") or {}).get("period") or {}
    start, end = _when_dt(period.get("start")), _when_dt(period.get("end"))
    return (start is None or start <= at) and (end is None or at <= end)


async def active_questionnaires(rec: Records) -> list[dict[str, Any]]:
    return (await rec.search("Questionnaire", [("status", "active"), ("_count", "100")])).resources


async def telehealth_consents(rec: Records, patient_id: str) -> list[dict[str, Any]]:
    page = await rec.search("Consent", [("patient", f"Patient/{patient_id}"), ("category", f"{CONSENT_CATEGORY}|telehealth"),
                                        ("status", "active"), ("_count", "50")])  # fmt: skip
    return page.resources


async def questionnaires(
    rec: Records, appointment: dict[str, Any], known: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """The intake (the one for the visit's service, else the general one) and the consent form."""
    page = known if known is not None else await active_questionnaires(rec)
    services = _service_texts(appointment)
    out: dict[str, dict[str, Any]] = {}
    for q in page:
        if q.get("url") == CONSENT_URL:
            out[CONSENT] = q
        elif _for_service(q, services):
            out[INTAKE] = q
        elif q.get("url") == INTAKE_URL:
            out.setdefault(INTAKE, q)
    # Not seeded yet (an organization whose first video visit was booked before forms existed, or
    # by import): Housecall's own forms, stored with the first answer (``ensure_questionnaires``).
    for q in SEED:
        out.setdefault(INTAKE if q["url"] == INTAKE_URL else CONSENT, _plain(q))
    return out


async def forms_for(
    rec: Records, appointment: dict[str, Any], *, known: list[dict[str, Any]] | None = None,
    consents: list[dict[str, Any]] | None = None,
) -> list[Form]:  # fmt: skip
    """The forms of a booked video or phone visit, each with whether it is done: the intake when
    this visit has a completed response, the consent when a telehealth Consent of the patient
    covers the visit's start. Other visits have none. ``known``/``consents``: the organization's
    active Questionnaires and the patient's telehealth Consents, when already read (one list of
    several visits)."""
    patient = patient_of(appointment)
    start = _when_dt(appointment.get("start"))
    if (
        appointment.get("status") != "booked"
        or not is_virtual(appointment)
        or patient is None
        or start is None
    ):
        return []
    found = await questionnaires(rec, appointment, known)
    forms = []
    if INTAKE in found:
        ident = f"{FORMS_SYSTEM}|{_identifier(appointment['id'], INTAKE)}"
        page = await rec.search(
            "QuestionnaireResponse", [("identifier", ident), ("subject", f"Patient/{patient}")]
        )
        response = page.resources[0] if page.resources else None
        forms.append(
            Form(INTAKE, found[INTAKE], response, bool(response and response.get("status") == "completed"))
        )
    if CONSENT in found:
        given = consents if consents is not None else await telehealth_consents(rec, patient)
        done = any(_consent_covers(c, start) for c in given)
        forms.append(Form(CONSENT, found[CONSENT], None, done))
    return forms


async def missing_as_system(ctx: ix.Ctx, appointment: dict[str, Any], patient_id: str) -> list[str]:
    """The forms still missing, read as the system (the reminder job; nothing leaves but slugs)."""
    return [f.slug for f in await forms_for(Records(ctx), appointment) if not f.done]


# -- questions, answers and validation ----------------------------------------------------------------


@dataclass
class Question:
    """One item of a Questionnaire, as the page shows it."""

    link_id: str
    text: str
    type: str  # boolean | integer | string | text | choice | display
    required: bool
    options: list[tuple[str, str]] = field(default_factory=list)  # (code, display) of a choice
    enable_when: list[dict[str, Any]] = field(default_factory=list)
    enable_behavior: str = "all"
    low: int | None = None
    high: int | None = None
    condition: str = ""  # "Answer if you said Yes to: Do you have pain?"

    @property
    def name(self) -> str:
        return "q-" + self.link_id


SUPPORTED = {"boolean", "integer", "string", "text", "choice", "display"}


def _bound(item: dict[str, Any], name: str) -> int | None:
    for ext in item.get("extension") or []:
        if ext.get("url") == f"http://hl7.org/fhir/StructureDefinition/{name}" and isinstance(
            ext.get("valueInteger"), int
        ):
            return int(ext["valueInteger"])
    return None


def questions(questionnaire: dict[str, Any]) -> list[Question]:
    """The Questionnaire's top-level items this page can ask (groups' items are flattened)."""
    items: list[dict[str, Any]] = []
    for item in questionnaire.get("item") or []:
        items.extend(item.get("item") or [] if item.get("type") == "group" else [item])
    texts = {str(i.get("linkId")): _(str(i.get("text") or "")) for i in items}
    out = []
    for item in items:
        kind = str(item.get("type"))
        if kind not in SUPPORTED or not item.get("linkId"):
            continue
        options = []
        for o in item.get("answerOption") or []:
            coding = o.get("valueCoding") or {}
            if coding.get("code"):
                options.append((str(coding["code"]), _(str(coding.get("display") or coding["code"]))))
            elif isinstance(o.get("valueString"), str):
                options.append((o["valueString"], _(o["valueString"])))
        when = [w for w in item.get("enableWhen") or [] if w.get("question")]
        condition = ""
        if when:
            first = when[0]
            said = _("Yes") if first.get("answerBoolean") is True else _("No") if first.get("answerBoolean") is False \
                else str(first.get("answerString") or (first.get("answerCoding") or {}).get("display") or "")  # fmt: skip
            condition = _("Answer only if you said “%(answer)s” to: %(question)s") % {
                "answer": said, "question": texts.get(str(first["question"]), "")}  # fmt: skip
        out.append(Question(str(item["linkId"]), _(str(item.get("text") or "")), kind, item.get("required") is True,
                            options, when, str(item.get("enableBehavior") or "all"), _bound(item, "minValue"),
                            _bound(item, "maxValue"), condition))  # fmt: skip
    return out


def _matches(condition: dict[str, Any], answer: Any) -> bool:
    op = condition.get("operator", "=")
    if op == "exists":
        return (answer is not None) == bool(condition.get("answerBoolean", True))
    expected: Any = None
    for key in ("answerBoolean", "answerInteger", "answerString", "answerDecimal"):
        if key in condition:
            expected = condition[key]
    if "answerCoding" in condition:
        expected = (condition["answerCoding"] or {}).get("code")
    if answer is None:
        return op == "!="
    if op == "=":
        return bool(answer == expected)
    if op == "!=":
        return bool(answer != expected)
    try:
        return {">": answer > expected, "<": answer < expected, ">=": answer >= expected,
                "<=": answer <= expected}.get(op, False)  # fmt: skip
    except TypeError:
        return False


def enabled(q: Question, answers: dict[str, Any]) -> bool:
    """Whether ``q`` applies given the answers so far (FHIR ``enableWhen``/``enableBehavior``)."""
    if not q.enable_when:
        return True
    results = [_matches(w, answers.get(str(w["question"]))) for w in q.enable_when]
    return any(results) if q.enable_behavior == "any" else all(results)


def read_answers(
    qs: list[Question], form: dict[str, str], *, consent: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """(answers by linkId, errors by field name) from the posted form: each enabled question is
    checked against its type and whether it is required; a question that does not apply is
    dropped, whatever was typed in it. ``consent``: the ``agree`` question must be yes."""
    answers: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for q in qs:
        if q.type == "display":
            continue
        raw = (form.get(q.name) or "").strip()
        if not enabled(q, answers):
            continue
        value: Any = None
        if q.type == "boolean":
            value = {"true": True, "false": False}.get(raw)
            if raw and value is None:
                errors[q.name] = _("Choose Yes or No.")
        elif q.type == "integer":
            if raw:
                if raw.lstrip("-").isdigit() and len(raw) < 10:
                    value = int(raw)
                    if (q.low is not None and value < q.low) or (q.high is not None and value > q.high):
                        errors[q.name] = _("Enter a whole number from %(low)s to %(high)s.") % {
                            "low": q.low, "high": q.high}  # fmt: skip
                        value = None
                else:
                    errors[q.name] = _("Enter a whole number, like 4.")
        elif q.type == "choice":
            if raw and raw not in {code for code, _d in q.options}:
                errors[q.name] = _("Choose one of the answers.")
            else:
                value = raw or None
        else:
            if len(raw) > TEXT_LIMIT[q.type]:
                errors[q.name] = _("Write at most %(n)s characters.") % {"n": TEXT_LIMIT[q.type]}
            else:
                value = raw or None
        if q.name in errors:
            continue
        if value is None and q.required:
            errors[q.name] = _("Answer this question: %(question)s") % {"question": q.text}
            continue
        if consent and q.link_id == "agree" and value is not True:
            errors[q.name] = _("To have a visit by video, phone or chat you need to agree. If you do not, please call the clinic to book a visit in person.")  # fmt: skip
            continue
        if value is not None:
            answers[q.link_id] = value
    return answers, errors


def values_of(response: dict[str, Any] | None) -> dict[str, str]:
    """The form fields' values from a stored response (to show what was answered before)."""
    out = {}
    for item in (response or {}).get("item") or []:
        for a in item.get("answer") or []:
            if "valueBoolean" in a:
                out["q-" + item["linkId"]] = "true" if a["valueBoolean"] else "false"
            elif "valueCoding" in a:
                out["q-" + item["linkId"]] = str(a["valueCoding"].get("code", ""))
            else:
                for key in ("valueInteger", "valueString"):
                    if key in a:
                        out["q-" + item["linkId"]] = str(a[key])
    return out


def _answer(q: Question, value: Any) -> dict[str, Any]:
    if q.type == "boolean":
        return {"valueBoolean": value}
    if q.type == "integer":
        return {"valueInteger": value}
    if q.type == "choice":
        return {"valueCoding": {"code": value, "display": dict(q.options).get(value, value)}}
    return {"valueString": value}


def _now_iso() -> str:
    return dt.datetime.fromtimestamp(clock.now(), dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def response_of(form: Form, qs: list[Question], answers: dict[str, Any], appointment: dict[str, Any],
                author: str) -> dict[str, Any]:  # fmt: skip
    """The QuestionnaireResponse for the answers (the questions' English texts from the store)."""
    english = {str(i.get("linkId")): str(i.get("text") or "") for i in form.questionnaire.get("item") or []}
    q = form.questionnaire
    return {
        "resourceType": "QuestionnaireResponse",
        "extension": [{"url": APPOINTMENT_EXT, "valueReference": {"reference": f"Appointment/{appointment['id']}"}}],
        "identifier": {"system": FORMS_SYSTEM, "value": _identifier(appointment["id"], form.slug)},
        "questionnaire": f"{q.get('url')}|{q.get('version')}" if q.get("version") else str(q.get("url")),
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_of(appointment)}"},
        "authored": _now_iso(),
        "author": {"reference": author},
        "source": {"reference": f"Patient/{patient_of(appointment)}"},
        "item": [{"linkId": x.link_id, "text": english.get(x.link_id, x.text), "answer": [_answer(x, answers[x.link_id])]}
                 for x in qs if x.link_id in answers],
    }  # fmt: skip


def consent_of(patient_id: str, response_id: str, author: str) -> dict[str, Any]:
    """The patient's telehealth Consent for a year, backed by the signed consent form."""
    now = dt.datetime.fromtimestamp(clock.now(), dt.UTC)
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment",
                              "display": "Treatment"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]},
                     {"coding": [{"system": CONSENT_CATEGORY, "code": "telehealth", "display": "Telehealth"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": _now_iso(),
        "performer": [{"reference": author}],
        "sourceReference": {"reference": f"QuestionnaireResponse/{response_id}"},
        "policy": [{"uri": CONSENT_POLICY}],
        "provision": {"type": "permit", "period": {"start": _now_iso(),
                                                   "end": (now + dt.timedelta(days=365)).isoformat(timespec="seconds").replace("+00:00", "Z")}},
    }  # fmt: skip


async def save(rec: Records, form: Form, qs: list[Question], answers: dict[str, Any],
               appointment: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Store the answers as the actor (the patient or their proxy): the visit's response is made
    or replaced; a consent form also records the Consent."""
    patient = str(patient_of(appointment))
    author = rec.actor.fhir_user if rec.actor.fhir_user and rec.actor.fhir_user.split("/")[0] in (
        "Patient", "RelatedPerson") else f"Patient/{patient}"  # fmt: skip
    response = response_of(form, qs, answers, appointment, author)
    if form.response is not None:
        stored = await rec.update({**response, "id": form.response["id"]})
    else:
        stored = await rec.create("QuestionnaireResponse", response)
    if form.slug == CONSENT:
        await rec.create("Consent", consent_of(patient, stored["id"], author))
    return stored


async def answers_for(rec: Records, appointment: dict[str, Any]) -> list[tuple[Form, list[tuple[str, str]]]]:
    """For the care team: each form with (question, answer) lines in the reader's language."""
    out = []
    for form in await forms_for(rec, appointment):
        lines = []
        if form.response is not None:
            texts = {q.link_id: q.text for q in questions(form.questionnaire)}
            for item in form.response.get("item") or []:
                for a in item.get("answer") or []:
                    if "valueBoolean" in a:
                        shown = _("Yes") if a["valueBoolean"] else _("No")
                    elif "valueCoding" in a:
                        shown = str(a["valueCoding"].get("display") or a["valueCoding"].get("code"))
                    else:
                        shown = str(a.get("valueInteger", a.get("valueString", "")))
                    lines.append((texts.get(item["linkId"], str(item.get("text") or item["linkId"])), shown))
        out.append((form, lines))
    return out
