"""The care team's one inbox: every piece of work is a FHIR Task.

Patient messages, refill requests, results to review, e-visits, monitoring alerts, e-consults and
callbacks all arrive the same way: the feature that produces the work calls ``open_task`` in its
own transaction, and the Task waits in a **pool** until someone claims it or is assigned it.

How a work item is written down (so the same facts show on the FHIR API):

- ``Task.code``: the kind of work (``urn:housecall:work`` codes in ``KINDS``);
- ``Task.for``: the patient; ``Task.focus``: what the work is about (the Communication, the
  MedicationRequest, the DiagnosticReport …);
- ``Task.performerType``: the pool, a HealthcareService of the organization
  (``urn:housecall:pool|<HealthcareService id>``) — kept when someone claims the task, so it can be
  handed back; clinicians belong to the pools their PractitionerRoles name;
- ``Task.owner``: who works it (a Practitioner) — absent while unassigned;
- ``Task.status``: ``requested`` (waiting), ``in-progress`` (claimed or assigned), ``completed``,
  ``cancelled``; ``Task.authoredOn`` is when it arrived, so unassigned work ages visibly.

Changes to a Task are made with the version the page read (If-Match), so two nurses claiming the
same message get one success and one "someone else took it".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.web.i18n import Msg, _
from housecall.web.records import Records

WORK_SYSTEM = "urn:housecall:work"
POOL_SYSTEM = "urn:housecall:pool"
OPEN_STATUSES = ("requested", "in-progress")
# Kind code -> English label, marked Msg(...) (translated when shown). Later features add theirs here.
KINDS: dict[str, str] = {
    "message": Msg("Patient message"),
    "refill": Msg("Refill request"),
    "result-review": Msg("Result to review"),
    "e-visit": Msg("E-visit"),
    "rpm-alert": Msg("Monitoring alert"),
    "e-consult": Msg("E-consult"),
    "callback": Msg("Call back"),
    "visit-summary": Msg("Visit summary from another clinician"),
    "tech-problem": Msg("Visit technical problem"),
}
# Where a work item is worked: kind -> function(task) giving the page's path. Features register.
ITEM_PAGES: dict[str, Callable[[dict[str, Any]], str]] = {}
AGE_WARNING_HOURS = 24  # unassigned longer than this shows as overdue


def item_page(kind: str) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    """Register the workspace page that works tasks of ``kind``."""

    def register(fn: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        ITEM_PAGES[kind] = fn
        return fn

    return register


def _now_iso() -> str:
    return (
        datetime.fromtimestamp(clock.now_us() / 1e6, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


async def open_task(
    rec: Records,
    kind: str,
    *,
    patient_id: str,
    focus: str,
    pool: str | None,
    description: str,
    priority: str = "routine",
    requester: str | None = None,
) -> dict[str, Any]:
    """Put a new work item in ``pool`` (a HealthcareService id), in the caller's transaction."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of work {kind!r}")
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": priority,
        "code": {"coding": [{"system": WORK_SYSTEM, "code": kind, "display": str(KINDS[kind])}]},
        "description": description[:500],
        "for": {"reference": f"Patient/{patient_id}"},
        "focus": {"reference": focus},
        "authoredOn": _now_iso(),
        "lastModified": _now_iso(),
    }
    if pool:
        task["performerType"] = [{"coding": [{"system": POOL_SYSTEM, "code": pool}]}]
    if requester:
        task["requester"] = {"reference": requester}
    return await rec.create("Task", task)


async def tasks_for(rec: Records, focus: str) -> list[dict[str, Any]]:
    """The open work items about ``focus`` (to complete them when the work is done elsewhere)."""
    page = await rec.search("Task", [("focus", focus), ("status", ",".join(OPEN_STATUSES)), ("_count", "50")])
    return page.resources


@dataclass(frozen=True)
class Item:
    """One row of the inbox."""

    id: str
    version: int
    kind: str
    kind_label: str
    status: str
    description: str
    patient_id: str
    patient_name: str
    pool: str | None
    owner: str | None  # "Practitioner/x"
    authored: str
    age_hours: float
    priority: str
    link: str

    @property
    def overdue(self) -> bool:
        return self.owner is None and self.age_hours >= AGE_WARNING_HOURS


def kind_of(task: dict[str, Any]) -> str:
    for coding in (task.get("code") or {}).get("coding") or []:
        if coding.get("system") == WORK_SYSTEM:
            return str(coding.get("code"))
    return "other"


def pool_of(task: dict[str, Any]) -> str | None:
    for concept in task.get("performerType") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == POOL_SYSTEM:
                return str(coding.get("code"))
    return None


def _age_hours(authored: str) -> float:
    try:
        when = datetime.fromisoformat(authored.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (clock.now_us() / 1e6 - when.timestamp()) / 3600)


def person_name(resource: dict[str, Any] | None) -> str:
    """A person's display name from a Patient/Practitioner/RelatedPerson."""
    if not resource:
        return ""
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        given = " ".join(name.get("given") or [])
        return f"{given} {name.get('family', '')}".strip()
    return ""


@dataclass(frozen=True)
class Filter:
    pool: str = ""  # a HealthcareService id, "" for every pool
    kind: str = ""
    who: str = ""  # "", "mine", "unassigned"


async def inbox(rec: Records, flt: Filter, *, me: str | None, limit: int = 100) -> tuple[list[Item], int]:
    """The open work the actor may see under ``flt``, oldest first, and how many there are."""
    query: list[tuple[str, str]] = [
        ("status", ",".join(OPEN_STATUSES)),
        ("_sort", "authored-on"),
        ("_count", str(limit)),
        ("_total", "accurate"),
        ("_include", "Task:patient"),
    ]
    if flt.pool:
        query.append(("performer", f"{POOL_SYSTEM}|{flt.pool}"))
    if flt.kind:
        query.append(("code", f"{WORK_SYSTEM}|{flt.kind}"))
    if flt.who == "mine" and me:
        query.append(("owner", me))
    elif flt.who == "unassigned":
        query.append(("owner:missing", "true"))
    page = await rec.search("Task", query)
    items = [_item(task, page.included) for task in page.resources]
    return items, page.total if page.total is not None else len(items)


async def counts(rec: Records, *, me: str | None) -> dict[str, int]:
    """Open work by kind, plus 'mine' and 'unassigned' (the numbers beside the filters).

    One search of the open work's codes and owners, counted here; a care team with more open work
    than one page holds gets one count query per number instead."""
    page = await rec.search(
        "Task",
        [("status", ",".join(OPEN_STATUSES)), ("_elements", "code,owner"), ("_count", str(COUNT_PAGE))],
    )
    if page.has_more:
        return await _counted_by_queries(rec, me=me)
    out: dict[str, int] = {"unassigned": 0}
    if me:
        out["mine"] = 0
    for task in page.resources:
        kind = kind_of(task)
        if kind in KINDS:
            out[kind] = out.get(kind, 0) + 1
        owner = (task.get("owner") or {}).get("reference")
        if owner is None:
            out["unassigned"] += 1
        elif me and owner == me:
            out["mine"] += 1
    return out


COUNT_PAGE = 1000  # open work items counted from one search; more, and each number is its own query


async def _counted_by_queries(rec: Records, *, me: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    base = [("status", ",".join(OPEN_STATUSES)), ("_summary", "count")]
    for kind in KINDS:
        page = await rec.search("Task", [*base, ("code", f"{WORK_SYSTEM}|{kind}")])
        if page.total:
            out[kind] = page.total
    out["unassigned"] = (await rec.search("Task", [*base, ("owner:missing", "true")])).total or 0
    if me:
        out["mine"] = (await rec.search("Task", [*base, ("owner", me)])).total or 0
    return out


def _item(task: dict[str, Any], included: dict[str, dict[str, Any]]) -> Item:
    patient_ref = (task.get("for") or {}).get("reference", "")
    kind = kind_of(task)
    page = ITEM_PAGES.get(kind)
    authored = task.get("authoredOn", "")
    return Item(
        id=task["id"],
        version=int(task["meta"]["versionId"]),
        kind=kind,
        kind_label=_(KINDS.get(kind, kind)),
        status=task.get("status", ""),
        description=task.get("description", ""),
        patient_id=patient_ref.removeprefix("Patient/"),
        patient_name=person_name(included.get(patient_ref)),
        pool=pool_of(task),
        owner=(task.get("owner") or {}).get("reference"),
        authored=authored,
        age_hours=_age_hours(authored),
        priority=task.get("priority", "routine"),
        link=page(task) if page else f"/workspace/tasks/{task['id']}",
    )


class Conflict(Exception):
    """Someone else changed the task since the page showed it."""


async def change(
    rec: Records, task_id: str, version: int, action: str, *, me: str, to: str | None = None
) -> dict[str, Any]:
    """Claim, assign, release or complete a task, if it is still the version the page showed."""
    found = await rec.read_versioned("Task", task_id)
    if found is None:
        raise LookupError(task_id)
    task, current = found
    if current != version:
        raise Conflict(task_id)
    if action == "claim":
        if task.get("owner"):
            raise Conflict(task_id)
        task["owner"] = {"reference": me}
        task["status"] = "in-progress"
    elif action == "assign":
        if not to:
            raise ValueError("assign needs someone to assign to")
        task["owner"] = {"reference": to}
        task["status"] = "in-progress"
    elif action == "release":
        task.pop("owner", None)
        task["status"] = "requested"
    elif action == "complete":
        task["status"] = "completed"
        task.setdefault("owner", {"reference": me})
        task.setdefault("executionPeriod", {})["end"] = _now_iso()
    elif action == "cancel":
        task["status"] = "cancelled"
    else:
        raise ValueError(f"unknown action {action!r}")
    task["lastModified"] = _now_iso()
    try:
        return await rec.update(task, version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise Conflict(task_id) from None
        raise


async def complete_work_on(rec: Records, focus: str, me: str) -> int:
    """Complete every open task about ``focus`` (the work was done from the item's own page)."""
    done = 0
    for task in await tasks_for(rec, focus):
        await change(rec, task["id"], int(task["meta"]["versionId"]), "complete", me=me)
        done += 1
    return done


async def pools(rec: Records) -> list[tuple[str, str]]:
    """(id, name) of the organization's active HealthcareServices: the pools work is routed to."""
    page = await rec.search("HealthcareService", [("active", "true"), ("_count", "100"), ("_sort", "name")])
    return [(s["id"], s.get("name", s["id"])) for s in page.resources]


async def pools_of(rec: Records, practitioner_id: str) -> list[str]:
    """The pools a clinician belongs to: the HealthcareServices of their active PractitionerRoles."""
    page = await rec.search(
        "PractitionerRole", [("practitioner", f"Practitioner/{practitioner_id}"), ("_count", "50")]
    )
    out: list[str] = []
    for role in page.resources:
        if role.get("active") is False:
            continue
        for ref in role.get("healthcareService") or []:
            rid = (ref.get("reference") or "").removeprefix("HealthcareService/")
            if rid and rid not in out:
                out.append(rid)
    return out


async def team(rec: Records) -> list[tuple[str, str]]:
    """("Practitioner/id", name) of the clinicians work can be assigned to: those whose active
    PractitionerRole puts them in one of the organization's pools, by name."""
    page = await rec.search(
        "PractitionerRole",
        [("active", "true"), ("service:missing", "false"), ("_include", "PractitionerRole:practitioner"),
         ("_count", "200")],
    )  # fmt: skip
    out: dict[str, str] = {}
    for role in page.resources:
        ref = (role.get("practitioner") or {}).get("reference")
        if ref and ref in page.included:
            out[ref] = person_name(page.included[ref]) or ref
    return sorted(out.items(), key=lambda item: item[1])
