"""Test result pages: the patient's released results, one report's values, a test's trend chart;
and the care team's page that reviews a report and releases it (the inbox's ``result-review``).

Portal routes are for patients and proxies (PORTAL), the patient taken from the session; a report
that is someone else's, unknown or not yet released answers the same 404. Workspace routes are for
the care team (CLINICAL). All sit behind the CSRF guard and reach the store through ``web/records``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.core.settings import Settings
from housecall.portal import home
from housecall.portal.home import Attention
from housecall.portal.views import portal_actor
from housecall.results import chart, service
from housecall.web import csrf, i18n, records
from housecall.web.i18n import _, ngettext
from housecall.web.pages import FormErrors, render
from housecall.web.records import Records
from housecall.workspace import inbox
from housecall.workspace.inbox import person_name
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
CODE = re.compile(r"^[A-Za-z0-9.\-]{1,32}$")
MAX_NOTE = 2000


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


@inbox.item_page("result-review")
def _review_page(task: dict[str, Any]) -> str:
    focus = str((task.get("focus") or {}).get("reference", ""))
    return f"/workspace/results/{focus.removeprefix('DiagnosticReport/')}"


@home.provider
async def new_results(rec: Records, patient_id: str) -> list[Attention]:
    n = await service.new_count(rec, patient_id, rec.ctx.settings)
    if not n:
        return []
    text = ngettext("%(n)s new test result", "%(n)s new test results", n) % {"n": n}
    return [Attention(text=text, path="/portal/results", count=n)]


def _not_found(request: Request, back: str) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such result."), back=back)  # fmt: skip


@router.get("/portal/results")
async def results_page(request: Request) -> Response:
    # Patients and proxies: the session patient's released results, newest first.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        reports = await service.reports(rec, actor.patient_id, _settings(request), released_only=True)
    return render(request, "results/list.html", reports=reports)


@router.get("/portal/results/trend/{code}")
async def trend_page(request: Request, code: str) -> Response:
    # Patients and proxies: one test's released values over time (session patient), as a chart.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    if not CODE.match(code):
        return _not_found(request, "/portal/results")
    async with records.reading(request, actor) as rec:
        reports = await service.reports(rec, actor.patient_id, _settings(request), released_only=True)
    trend = service.trend_of(reports, code)
    if trend is None:
        return _not_found(request, "/portal/results")
    svg = chart.chart(trend, i18n.date_text)
    return render(request, "results/trend.html", trend=trend, svg=svg, points=list(reversed(trend.points)))


@router.get("/portal/results/{report_id}")
async def report_page(request: Request, report_id: str) -> Response:
    # Patients and proxies: one released report of the session patient's, with values and ranges.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        report = await service.released_report(rec, actor.patient_id, report_id, _settings(request))
        reviewer = None
        if report and report.reviewed_by.startswith("Practitioner/"):
            reviewer = await rec.read("Practitioner", report.reviewed_by.split("/", 1)[1])
    if report is None:
        return _not_found(request, "/portal/results")
    return render(request, "results/report.html", report=report, reviewer=person_name(reviewer))


async def _review_response(
    request: Request, report_id: str, *, status: int = 200, errors: FormErrors | None = None,
    values: dict[str, str] | None = None, notice: str | None = None,
) -> Response:  # fmt: skip
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        found = await service.any_report(rec, report_id, _settings(request))
        if found is None:
            return _not_found(request, "/workspace")
        report, resource = found
        patient_ref = str((resource.get("subject") or {}).get("reference", ""))
        patient = await rec.read("Patient", patient_ref.removeprefix("Patient/")) if patient_ref else None
        reviewer = None
        if report.reviewed_by.startswith("Practitioner/"):
            reviewer = await rec.read("Practitioner", report.reviewed_by.split("/", 1)[1])
    return render(request, "results/review.html", status=status, report=report,
                  version=resource["meta"]["versionId"], tagged=service.tagged(resource),
                  automatic=service.automatic_release(resource, _settings(request)),
                  patient_name=person_name(patient), reviewer=person_name(reviewer),
                  errors=errors or FormErrors(), values=values or {}, notice=notice)  # fmt: skip


@router.get("/workspace/results/{report_id}")
async def review_page(request: Request, report_id: str) -> Response:
    # Care team only: a report of a patient the person may see, to review and release.
    return await _review_response(request, report_id)


@router.post("/workspace/results/{report_id}/release")
async def release(request: Request, report_id: str) -> Response:
    # Care team only; CSRF-checked; released only on the version the page showed.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
    version, note = values.get("version", ""), values.get("note", "").strip()
    if len(note) > MAX_NOTE:
        errors = FormErrors()
        errors.add("note", _("Keep the note under 2000 characters."))
        return await _review_response(request, report_id, status=400, errors=errors, values=values)
    if not version.isdigit() or not actor.fhir_user:
        return await _review_response(request, report_id, status=409)
    try:
        async with records.writing(request, actor) as rec:
            await service.release(rec, report_id, int(version), actor.fhir_user, note)
    except (inbox.Conflict, service.AlreadyReleased):
        return render(request, "identity/error.html", status=409, title=_("Someone else changed this"),
                      message=_("This result was changed or released by someone else while you were looking."),
                      back=f"/workspace/results/{report_id}")  # fmt: skip
    except LookupError:
        return _not_found(request, "/workspace")
    return RedirectResponse(f"/workspace/results/{report_id}", status_code=303)


def install(app: FastAPI) -> None:
    app.include_router(router)
