"""Test results in the portal: released only after a clinician's review or the configured delay,
values with ranges and flags in words, plain names, and a trend chart a person can read."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from housecall import notify
from housecall.identity.clock import clock
from housecall.results import service
from housecall.workspace import inbox
from tests.clinic import Clinic, text_of

LOINC = "http://loinc.org"
A1C = "4548-4"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def lab(c: Clinic, value: float, days_ago: float, patient: str | None = None) -> dict[str, Any]:
    """An A1c report for the patient, drawn ``days_ago`` days ago and issued 9 hours later."""
    who = f"Patient/{patient or c.patient}"
    drawn = datetime.fromtimestamp(clock.now(), UTC) - timedelta(days=days_ago)
    flag = [{"coding": [{"system": service.INTERPRETATION, "code": "H"}]}] if value > 5.6 else []
    obs = await c.create({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": A1C, "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
        "subject": {"reference": who}, "effectiveDateTime": iso(drawn),
        "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
        "referenceRange": [{"low": {"value": 4.0, "unit": "%"}, "high": {"value": 5.6, "unit": "%"}}],
        **({"interpretation": flag} if flag else {}),
    })  # fmt: skip
    return await c.create({
        "resourceType": "DiagnosticReport", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": A1C, "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
        "subject": {"reference": who}, "effectiveDateTime": iso(drawn),
        "issued": iso(drawn + timedelta(hours=9)), "result": [{"reference": f"Observation/{obs['id']}"}],
    })  # fmt: skip


async def review_task(c: Clinic, report: dict[str, Any]) -> dict[str, Any]:
    """What a lab interface does when a report arrives: a review item in the pool."""
    async with c.env.db.transaction() as conn:
        from housecall.access.policy import Access
        from housecall.fhir import interactions as ix
        from housecall.web.records import Records

        rec = Records(ix.Ctx(conn, c.env.settings, "https://testserver/fhir", Access.system(c.env.org_id)))
        return await service.open_review(rec, report, c.pool)


async def test_unreleased_results_stay_hidden_until_the_clinician_releases_them(
    clinic: Clinic, told: list[Any]
) -> None:
    c = clinic
    report = await lab(c, 7.4, days_ago=1)
    task = await review_task(c, report)
    patient = c.browsers["patient"]
    assert "7.4" not in text_of((await patient.get("/portal/results")).text)
    assert (await patient.get(f"/portal/results/{report['id']}")).status_code == 404
    assert (await patient.get(f"/portal/results/trend/{A1C}")).status_code == 404
    assert "new test result" not in text_of((await patient.get("/portal")).text)
    # The patient's own apps get it from the API at once (decision 0013).
    assert (await patient.get(f"/fhir/DiagnosticReport/{report['id']}")).status_code == 200

    # The clinician finds it in the inbox and releases it with a note.
    queue = await c.browsers["clinician"].get("/workspace", params={"kind": "result-review"})
    assert f"/workspace/results/{report['id']}" in queue.text
    path = f"/workspace/results/{report['id']}"
    page = await c.browsers["clinician"].get(path)
    assert page.status_code == 200 and "Not yet: automatically on" in text_of(page.text)
    r = await c.form_post("clinician", f"{path}/release",
                          {"version": "1", "note": "A little high; let us talk at your next visit."}, form_from=path)  # fmt: skip
    assert r.status_code == 303
    stored = await c.read("DiagnosticReport", report["id"])
    assert service.tagged(stored) and service.release_note(stored)["by"] == f"Practitioner/{c.clinician}"
    assert (await c.read("Task", task["id"]))["status"] == "completed"
    assert told == [
        (c.accounts["patient"].id, notify.Kind.RESULT_RELEASED.value, f"/portal/results/{report['id']}")
    ]

    listing = text_of((await patient.get("/portal/results")).text)
    assert (
        "Average blood sugar, last 3 months (A1c)" in listing and "1 value outside the usual range" in listing
    )
    detail = await patient.get(f"/portal/results/{report['id']}")
    text = text_of(detail.text)
    assert "7.4 %" in text and "4 to 5.6 %" in text and "High" in text
    assert "A little high; let us talk at your next visit." in text and "Note from Maya Carter" in text
    assert "1 new test result" in text_of((await patient.get("/portal")).text)
    # Released once only: a second release on the old version is refused.
    again = await c.form_post("clinician", f"{path}/release", {"version": "1"}, form_from=path)
    assert again.status_code == 409


async def test_results_are_released_after_the_configured_delay(clinic: Clinic) -> None:
    c = clinic
    assert c.env.settings.result_release_hours == 72
    report = await lab(c, 5.1, days_ago=1)  # issued 15 hours ago
    patient = c.browsers["patient"]
    assert (await patient.get(f"/portal/results/{report['id']}")).status_code == 404
    clock.advance(56 * 3600)  # 71 hours after issue: still waiting
    await c.env.signin(patient, c.accounts["patient"].email, next="/portal")
    assert (await patient.get(f"/portal/results/{report['id']}")).status_code == 404
    clock.advance(2 * 3600)  # 73 hours
    await c.env.signin(patient, c.accounts["patient"].email, next="/portal")
    page = await patient.get(f"/portal/results/{report['id']}")
    assert page.status_code == 200 and "In the usual range" in text_of(page.text)
    assert not service.tagged(await c.read("DiagnosticReport", report["id"]))  # computed, not written


async def test_trend_chart_has_the_points_the_range_and_a_table(clinic: Clinic) -> None:
    c = clinic
    for value, days in ((6.1, 400), (7.4, 200), (6.8, 30)):
        await lab(c, value, days_ago=days)
    page = await c.browsers["patient"].get(f"/portal/results/trend/{A1C}")
    assert page.status_code == 200
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert 'role="img"' in svg and 'aria-labelledby="trend-title trend-desc"' in svg
    assert '<title id="trend-title">Average blood sugar, last 3 months (A1c) over time</title>' in svg
    assert "3 results from" in svg and "Latest: 6.8 %" in svg
    assert svg.count('class="range-band"') == 1 and "4 to 5.6 %" in svg
    assert svg.count('<g class="point flagged">') == 3  # all three above 5.6: squares, labelled
    assert svg.count(">High</text>") == 3
    assert "polyline" in svg and "Date of the test" in svg
    for value in ("6.1 %", "7.4 %", "6.8 %"):
        assert f"{value}, high</title>" in svg
    # The y positions follow the values: 7.4 is highest on the page (smallest y).
    ys = [float(y) for y in re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="12"', svg)]
    assert ys[1] < ys[2] < ys[0]
    table = text_of(page.text[page.text.index("</svg>") :])
    assert "7.4 %" in table and "4 to 5.6 %" in table


async def test_another_patients_report_and_trend_are_not_found(clinic: Clinic) -> None:
    c = clinic
    theirs = await lab(c, 9.9, days_ago=30, patient=c.other_patient)
    patient = c.browsers["patient"]
    assert (await patient.get(f"/portal/results/{theirs['id']}")).status_code == 404
    assert (await patient.get(f"/portal/results/trend/{A1C}")).status_code == 404
    assert "9.9" not in (await patient.get("/portal/results")).text
    assert (await patient.get("/portal/results/trend/<script>")).status_code == 404
    # Nor can a clinician outside that patient's care team review it.
    path = f"/workspace/results/{theirs['id']}"
    assert (await c.browsers["clinician"].get(path)).status_code == 404
    r = await c.form_post("clinician", f"{path}/release", {"version": "1"}, form_from="/workspace")
    assert r.status_code == 404 and not service.tagged(await c.read("DiagnosticReport", theirs["id"]))
    assert (await c.browsers["patient"].get(path)).status_code == 403


async def test_kinds_registered_in_the_inbox() -> None:
    assert "refill" in inbox.ITEM_PAGES and "result-review" in inbox.ITEM_PAGES
    assert (
        inbox.ITEM_PAGES["result-review"]({"focus": {"reference": "DiagnosticReport/x"}})
        == "/workspace/results/x"
    )


async def test_the_patient_is_told_when_the_delay_releases_an_unreviewed_result(
    clinic: Clinic, told: list[Any]
) -> None:
    from housecall.core import jobs

    c = clinic
    report = await lab(c, 5.0, days_ago=1)
    reviewed = await lab(c, 5.2, days_ago=1)
    await review_task(c, report)
    await review_task(c, reviewed)
    path = f"/workspace/results/{reviewed['id']}"
    assert (
        await c.form_post("clinician", f"{path}/release", {"version": "1"}, form_from=path)
    ).status_code == 303
    told.clear()
    await jobs.work_once(c.env.db)
    assert told == []  # not due yet
    clock.advance(60 * 3600)
    while await jobs.work_once(c.env.db):
        pass
    # Told about the one nobody reviewed, once; the reviewed one was told about at its release.
    assert told == [
        (c.accounts["patient"].id, notify.Kind.RESULT_RELEASED.value, f"/portal/results/{report['id']}")
    ]
    async with c.env.db.reader() as conn:
        states = await conn.fetch(
            "SELECT state FROM job WHERE name = $1 AND args LIKE $2", service.RELEASE_JOB, f"%{c.env.org_id}%"
        )
    assert [r[0] for r in states] == ["done", "done"]


async def test_results_pages_in_spanish(clinic: Clinic) -> None:
    c = clinic
    report = await lab(c, 7.0, days_ago=10)
    await c.form_post("patient", "/language", {"lang": "es", "next": "/portal"}, form_from="/portal")
    page = text_of((await c.browsers["patient"].get(f"/portal/results/{report['id']}")).text)
    assert "Azúcar en sangre promedio, últimos 3 meses (A1c)" in page and "Alto" in page
    assert "de 4 a 5.6 %" in page
    trend = (await c.browsers["patient"].get(f"/portal/results/trend/{A1C}")).text
    assert "a lo largo del tiempo</title>" in trend and "Fecha del análisis" in trend
