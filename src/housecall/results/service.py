"""Test results: what the patient may see in the portal, and releasing results to them.

A result (a ``DiagnosticReport`` and the ``Observation``s in its ``result``) is shown in the portal
only once it is **released** (decision 0013):

- a clinician reviewed it and released it: the report carries the tag
  ``urn:housecall:release|released`` in ``meta.tag`` and an extension ``urn:housecall:release``
  saying by whom (``by``), when (``at``) and with what note for the patient (``note``);
- or ``HOUSECALL_RESULT_RELEASE_HOURS`` have passed since the report's ``issued`` time (a result
  nobody reviewed is not withheld for ever). No write is needed for this: it is computed when the
  page is built, so it needs no job and cannot be late.

The portal's pages apply the rule; the FHIR API does not (a patient's own apps get results as soon
as they are stored, as the 21st Century Cures Act expects; see the decision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from housecall import notify
from housecall.access.policy import Access
from housecall.audit import trail
from housecall.core import jobs
from housecall.core.settings import Settings, get_settings
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.results import names
from housecall.web.i18n import _
from housecall.web.records import Records
from housecall.workspace import inbox

RELEASE_SYSTEM = "urn:housecall:release"
RELEASE_TAG = {"system": RELEASE_SYSTEM, "code": "released", "display": "Released to the patient"}
RELEASE_EXT = "urn:housecall:release"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
RELEASE_JOB = "results.released_by_delay"
NEW_DAYS = 14  # a result released this recently counts as new on the home page


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


def tagged(report: dict[str, Any]) -> bool:
    return any(
        t.get("system") == RELEASE_SYSTEM and t.get("code") == "released"
        for t in (report.get("meta") or {}).get("tag") or []
    )


def release_note(report: dict[str, Any]) -> dict[str, str]:
    """by / at / note of the clinician's release, when there was one."""
    out: dict[str, str] = {}
    for ext in report.get("extension") or []:
        if ext.get("url") != RELEASE_EXT:
            continue
        for part in ext.get("extension") or []:
            key = part.get("url")
            if key == "by":
                out["by"] = str((part.get("valueReference") or {}).get("reference", ""))
            elif key == "at":
                out["at"] = str(part.get("valueDateTime", ""))
            elif key == "note":
                out["note"] = str(part.get("valueString", ""))
    return out


def automatic_release(report: dict[str, Any], settings: Settings) -> datetime | None:
    """When the delay releases the report (None: it has no ``issued`` time to count from)."""
    issued = _when(report.get("issued"))
    return issued + timedelta(hours=settings.result_release_hours) if issued else None


def released_at(report: dict[str, Any], settings: Settings) -> datetime | None:
    """When the report was (or will be) released: the clinician's release, else the delay's."""
    if tagged(report):
        return _when(release_note(report).get("at")) or _when(report.get("issued")) or _now()
    return automatic_release(report, settings)


def is_released(report: dict[str, Any], settings: Settings, now: datetime | None = None) -> bool:
    if report.get("status") not in ("final", "amended", "corrected", "appended", "preliminary"):
        return False
    if tagged(report):
        return True
    due = automatic_release(report, settings)
    return due is not None and due <= (now or _now())


def mark_released(report: dict[str, Any], by: str, note: str) -> dict[str, Any]:
    """Tag the report released and record by whom, when and the note for the patient."""
    meta = report.setdefault("meta", {})
    tags = [t for t in meta.get("tag") or [] if t.get("system") != RELEASE_SYSTEM]
    meta["tag"] = [*tags, dict(RELEASE_TAG)]
    parts: list[dict[str, Any]] = [
        {"url": "by", "valueReference": {"reference": by}},
        {"url": "at", "valueDateTime": inbox._now_iso()},
    ]
    if note:
        parts.append({"url": "note", "valueString": note})
    others = [e for e in report.get("extension") or [] if e.get("url") != RELEASE_EXT]
    report["extension"] = [*others, {"url": RELEASE_EXT, "extension": parts}]
    return report


# -- values and flags ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One measured value, ready to show."""

    obs_id: str
    code: str | None  # LOINC
    name: str  # plain language
    technical: str  # the lab's name
    number: float | None
    text: str  # the value as written, with its unit
    unit: str
    low: float | None
    high: float | None
    flag: str  # "", "high", "low", "very-high", "very-low", "abnormal"
    when: str

    @property
    def flag_words(self) -> str:
        return flag_words(self.flag)

    @property
    def range_text(self) -> str:
        return range_text(self.low, self.high, self.unit)


def flag_words(flag: str) -> str:
    return {
        "high": _("High"),
        "low": _("Low"),
        "very-high": _("Very high"),
        "very-low": _("Very low"),
        "abnormal": _("Outside the usual range"),
        "": _("In the usual range"),
    }.get(flag, _("Outside the usual range"))


def range_text(low: float | None, high: float | None, unit: str) -> str:
    if low is not None and high is not None:
        return (
            _("%(low)s to %(high)s %(unit)s") % {"low": _num(low), "high": _num(high), "unit": unit}
        ).strip()
    if high is not None:
        return (_("%(high)s %(unit)s or less") % {"high": _num(high), "unit": unit}).strip()
    if low is not None:
        return (_("%(low)s %(unit)s or more") % {"low": _num(low), "unit": unit}).strip()
    return ""


def _num(value: float) -> str:
    return f"{value:g}"


def _flag(obs: dict[str, Any], number: float | None, low: float | None, high: float | None) -> str:
    for concept in obs.get("interpretation") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") != INTERPRETATION:
                continue
            code = coding.get("code")
            if code in ("HH", "HU"):
                return "very-high"
            if code in ("LL", "LU"):
                return "very-low"
            if code in ("H", ">"):
                return "high"
            if code in ("L", "<"):
                return "low"
            if code in ("A", "AA"):
                return "abnormal"
            if code == "N":
                return ""
    if number is not None:
        if high is not None and number > high:
            return "high"
        if low is not None and number < low:
            return "low"
    return ""


def value_of(obs: dict[str, Any], plain: dict[str, str]) -> Value:
    quantity = obs.get("valueQuantity") or {}
    raw = quantity.get("value")
    number = float(raw) if isinstance(raw, int | float) and math.isfinite(raw) else None
    unit = str(quantity.get("unit") or quantity.get("code") or "")
    rng = (obs.get("referenceRange") or [{}])[0]
    low = (rng.get("low") or {}).get("value")
    high = (rng.get("high") or {}).get("value")
    low = float(low) if isinstance(low, int | float) else None
    high = float(high) if isinstance(high, int | float) else None
    if number is not None:
        text = f"{_num(number)} {unit}".strip()
    elif obs.get("valueString"):
        text = str(obs["valueString"])
    elif obs.get("valueCodeableConcept"):
        text = names.technical_name(obs["valueCodeableConcept"])
    else:
        text = ""
    return Value(
        obs_id=obs["id"],
        code=names.loinc_code(obs.get("code")),
        name=names.plain_name(obs.get("code"), plain),
        technical=names.technical_name(obs.get("code")),
        number=number,
        text=text,
        unit=unit,
        low=low,
        high=high,
        flag=_flag(obs, number, low, high),
        when=obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("start") or "",
    )


@dataclass(frozen=True)
class Report:
    id: str
    name: str
    technical: str
    issued: str
    effective: str
    released: bool
    released_at: datetime | None
    reviewed_by: str  # "Practitioner/x" when a clinician released it
    note: str  # the clinician's note for the patient
    conclusion: str
    values: list[Value]

    @property
    def flagged(self) -> int:
        return sum(1 for v in self.values if v.flag)


def report_of(report: dict[str, Any], included: dict[str, dict[str, Any]], settings: Settings) -> Report:
    plain = names.plain_names()
    values = []
    for ref in report.get("result") or []:
        obs = included.get(str(ref.get("reference", "")))
        if obs is not None and obs.get("resourceType") == "Observation":
            values.append(value_of(obs, plain))
    release = release_note(report) if tagged(report) else {}
    return Report(
        id=report["id"],
        name=names.plain_name(report.get("code"), plain),
        technical=names.technical_name(report.get("code")),
        issued=report.get("issued", ""),
        effective=report.get("effectiveDateTime") or (report.get("effectivePeriod") or {}).get("start") or "",
        released=is_released(report, settings),
        released_at=released_at(report, settings),
        reviewed_by=release.get("by", ""),
        note=release.get("note", ""),
        conclusion=str(report.get("conclusion", "")),
        values=values,
    )


async def reports(rec: Records, patient_id: str, settings: Settings, *, released_only: bool) -> list[Report]:
    """The patient's reports with their values, newest first (only the released ones for the
    patient's own pages)."""
    page = await rec.search(
        "DiagnosticReport",
        [("patient", f"Patient/{patient_id}"), ("_sort", "-issued"), ("_count", "200"),
         ("_include", "DiagnosticReport:result")],
    )  # fmt: skip
    out = [report_of(r, page.included, settings) for r in page.resources]
    return [r for r in out if r.released] if released_only else out


async def released_report(rec: Records, patient_id: str, report_id: str, settings: Settings) -> Report | None:
    """One report of the patient's, with its values, if it is released (None otherwise: the same
    answer as for a report that does not exist or is someone else's)."""
    report = await rec.read("DiagnosticReport", report_id)
    if report is None or (report.get("subject") or {}).get("reference") != f"Patient/{patient_id}":
        return None
    if not is_released(report, settings):
        return None
    return await _with_values(rec, report, settings)


async def _with_values(rec: Records, report: dict[str, Any], settings: Settings) -> Report:
    included: dict[str, dict[str, Any]] = {}
    ids = [str(r.get("reference", "")).removeprefix("Observation/") for r in report.get("result") or []]
    ids = [i for i in ids if i and "/" not in i]
    if ids:
        page = await rec.search("Observation", [("_id", ",".join(ids)), ("_count", str(len(ids)))])
        included = {f"Observation/{o['id']}": o for o in page.resources}
    return report_of(report, included, settings)


async def any_report(
    rec: Records, report_id: str, settings: Settings
) -> tuple[Report, dict[str, Any]] | None:
    """A report as the care team sees it (released or not), with the resource."""
    report = await rec.read("DiagnosticReport", report_id)
    if report is None:
        return None
    return await _with_values(rec, report, settings), report


@dataclass(frozen=True)
class Trend:
    code: str
    name: str
    technical: str
    unit: str
    low: float | None
    high: float | None
    points: list[Value]  # oldest first, numbers only


def trend_of(released: list[Report], code: str) -> Trend | None:
    """The values of one test (LOINC ``code``) across the patient's released reports."""
    points = [v for r in released for v in r.values if v.code == code and v.number is not None]
    if not points:
        return None
    points.sort(key=lambda v: _when(v.when) or datetime.min.replace(tzinfo=UTC))
    latest = points[-1]
    return Trend(code, latest.name, latest.technical, latest.unit, latest.low, latest.high, points)


async def new_count(rec: Records, patient_id: str, settings: Settings) -> int:
    """Results released to the patient in the last ``NEW_DAYS`` days."""
    since = _now() - timedelta(days=NEW_DAYS)
    page = await rec.search(
        "DiagnosticReport",
        [("patient", f"Patient/{patient_id}"), ("_sort", "-issued"), ("_count", "50"),
         ("issued", f"ge{(since - timedelta(hours=settings.result_release_hours)).date().isoformat()}")],
    )  # fmt: skip
    n = 0
    for report in page.resources:
        when = released_at(report, settings)
        if is_released(report, settings) and when is not None and when >= since:
            n += 1
    return n


# -- review and release ----------------------------------------------------------------------------


async def open_review(rec: Records, report: dict[str, Any], pool: str | None) -> dict[str, Any]:
    """Put a newly arrived report in the care team's inbox for review (kind ``result-review``), and
    schedule telling the patient when the delay releases it, should nobody release it sooner.
    Whatever receives reports (a lab interface) calls this in the transaction that stores them."""
    patient_id = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
    task = await inbox.open_task(
        rec, "result-review", patient_id=patient_id, focus=f"DiagnosticReport/{report['id']}", pool=pool,
        description=f"Result: {names.technical_name(report.get('code')) or report['id']}",
    )  # fmt: skip
    due = automatic_release(report, rec.ctx.settings)
    if due is not None:
        org = rec.actor.org_id
        await jobs.enqueue(rec.conn, RELEASE_JOB, {"org": org, "report": report["id"]},
                           run_at=int(due.timestamp() * 1_000_000), key=f"{RELEASE_JOB}:{org}:{report['id']}")  # fmt: skip
    return task


@jobs.handler(RELEASE_JOB)
async def released_by_delay(job: jobs.JobContext, args: dict[str, Any]) -> None:
    """The delay has released a report nobody reviewed: tell the patient (once; a report a
    clinician released earlier was told about then). The review item stays in the inbox."""
    settings = get_settings()
    async with job.db.transaction() as conn:
        ctx = ix.Ctx(
            conn, settings, settings.public_url.rstrip("/") + "/fhir", Access.system(str(args["org"]))
        )
        rec = Records(ctx)
        report = await rec.read("DiagnosticReport", str(args["report"]))
        if report is not None and not tagged(report) and is_released(report, settings):
            patient_id = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
            await notify.tell_patient(conn, str(args["org"]), patient_id, notify.Kind.RESULT_RELEASED,
                                    f"/portal/results/{report['id']}")  # fmt: skip
        await trail.append(conn, rec.entries)


class AlreadyReleased(Exception):
    pass


async def release(rec: Records, report_id: str, version: int, me: str, note: str) -> dict[str, Any]:
    """Mark the report reviewed and released on the version the page showed, finish its review
    work items, and tell the patient."""
    found = await rec.read_versioned("DiagnosticReport", report_id)
    if found is None:
        raise LookupError(report_id)
    report, current = found
    if current != version:
        raise inbox.Conflict(report_id)
    if tagged(report):
        raise AlreadyReleased(report_id)
    try:
        updated = await rec.update(mark_released(report, me, note.strip()), version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise inbox.Conflict(report_id) from None
        raise
    await inbox.complete_work_on(rec, f"DiagnosticReport/{report_id}", me)
    patient_id = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
    await notify.tell_patient(rec.conn, rec.actor.org_id, patient_id, notify.Kind.RESULT_RELEASED,
                            f"/portal/results/{report_id}")  # fmt: skip
    return updated
