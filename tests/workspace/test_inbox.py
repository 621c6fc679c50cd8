"""The care team's inbox: work items are Tasks in pools; claiming is first come, first served;
what a clinician sees is limited to their patients; every page read is audited."""

from __future__ import annotations

from typing import Any

from housecall.workspace import inbox
from tests.clinic import Clinic, text_of


def task(
    c: Clinic, patient: str, kind: str = "message", description: str = "Question about a rash"
) -> dict[str, Any]:
    return {
        "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
        "code": {"coding": [{"system": inbox.WORK_SYSTEM, "code": kind}]},
        "description": description, "for": {"reference": f"Patient/{patient}"},
        "focus": {"reference": f"Patient/{patient}"}, "authoredOn": "2026-01-01T09:00:00Z",
        "performerType": [{"coding": [{"system": inbox.POOL_SYSTEM, "code": c.pool}]}],
    }  # fmt: skip


async def test_pool_work_is_claimed_once_and_limited_to_the_teams_patients(clinic: Clinic) -> None:
    c = clinic
    mine = await c.create(task(c, c.patient))
    await c.create(task(c, c.other_patient, description="Somebody else's question"))
    page = await c.browsers["nurse"].get("/workspace", params={"pool": c.pool})
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Question about a rash" in text and "Ana Reyes" in text
    assert "Somebody else's question" not in text  # not a patient of this team
    assert "aging-old" in page.text  # unassigned since January: overdue, shown as such

    # The nurse and the clinician both saw version 1; the nurse claims first.
    claimed = await c.form_post(
        "nurse", f"/workspace/tasks/{mine['id']}/claim", {"version": "1"}, form_from="/workspace"
    )
    assert claimed.status_code == 303
    late = await c.form_post(
        "clinician", f"/workspace/tasks/{mine['id']}/claim", {"version": "1"}, form_from="/workspace"
    )
    assert late.status_code == 409 and "Someone else changed this" in late.text
    stored = await c.read("Task", mine["id"])
    assert stored["owner"]["reference"] == f"Practitioner/{c.nurse}" and stored["status"] == "in-progress"

    mine_only = text_of((await c.browsers["nurse"].get("/workspace", params={"who": "mine"})).text)
    assert "Question about a rash" in mine_only
    done = await c.form_post(
        "nurse", f"/workspace/tasks/{mine['id']}/complete", {"version": "2"}, form_from="/workspace"
    )
    assert done.status_code == 303
    assert (await c.read("Task", mine["id"]))["status"] == "completed"
    assert "Question about a rash" not in text_of((await c.browsers["nurse"].get("/workspace")).text)


async def test_a_task_of_a_patient_outside_the_team_cannot_be_claimed(clinic: Clinic) -> None:
    c = clinic
    other = await c.create(task(c, c.other_patient))
    r = await c.form_post(
        "nurse", f"/workspace/tasks/{other['id']}/claim", {"version": "1"}, form_from="/workspace"
    )
    assert r.status_code == 404
    assert "owner" not in await c.read("Task", other["id"])


async def test_patients_and_front_desk_have_no_workspace(clinic: Clinic) -> None:
    for who in ("patient", "desk"):
        assert (await clinic.browsers[who].get("/workspace")).status_code == 403


async def test_inbox_reads_are_audited(clinic: Clinic) -> None:
    c = clinic
    await c.create(task(c, c.patient))
    await c.browsers["nurse"].get("/workspace")
    from housecall.audit.trail import sink_for

    await sink_for(c.env.app.state).close()
    async with c.env.db.reader() as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND patient_id = $2", c.env.org_id, c.patient
        )
    assert n >= 1


async def test_work_is_assigned_to_a_member_of_the_pool_only(clinic: Clinic) -> None:
    c = clinic
    item = await c.create(task(c, c.patient))
    page = await c.browsers["nurse"].get("/workspace")
    assert f'value="Practitioner/{c.clinician}"' in page.text  # Dr Carter is in the pool: offered
    stranger = await c.create({"resourceType": "Practitioner", "name": [{"family": "Stranger"}]})
    r = await c.form_post("nurse", f"/workspace/tasks/{item['id']}/assign",
                          {"version": "1", "to": f"Practitioner/{stranger['id']}"}, form_from="/workspace")  # fmt: skip
    assert r.status_code == 404 and "owner" not in await c.read("Task", item["id"])
    r = await c.form_post("nurse", f"/workspace/tasks/{item['id']}/assign",
                          {"version": "1", "to": f"Practitioner/{c.clinician}"}, form_from="/workspace")  # fmt: skip
    assert r.status_code == 303
    stored = await c.read("Task", item["id"])
    assert stored["owner"]["reference"] == f"Practitioner/{c.clinician}" and stored["status"] == "in-progress"
    mine = text_of((await c.browsers["clinician"].get("/workspace", params={"who": "mine"})).text)
    assert "Question about a rash" in mine


async def test_counts_agree_whether_counted_from_one_search_or_by_queries(clinic: Clinic) -> None:
    c = clinic
    for n, kind in enumerate(("message", "message", "refill", "result-review")):
        await c.create(task(c, c.patient, kind=kind, description=f"item {n}"))
    await c.create(task(c, c.other_patient, kind="refill"))  # not this team's: never counted
    claimed = await c.create(task(c, c.patient, kind="refill"))
    r = await c.form_post(
        "nurse", f"/workspace/tasks/{claimed['id']}/claim", {"version": "1"}, form_from="/workspace"
    )
    assert r.status_code == 303
    from housecall.web import records

    async with c.env.db.reader() as conn:
        from housecall.access.actor import Actor, ActorKind, Role
        from housecall.access.policy import Access
        from housecall.fhir import interactions as ix

        nurse = Actor(ActorKind.STAFF, c.env.org_id, c.accounts["nurse"].id, frozenset({Role.NURSE}),
                      f"Practitioner/{c.nurse}")  # fmt: skip
        ctx = ix.Ctx(conn, c.env.settings, "https://testserver/fhir", await Access.load(conn, nurse))
        rec = records.Records(ctx)
        one = await inbox.counts(rec, me=nurse.fhir_user)
        many = await inbox._counted_by_queries(rec, me=nurse.fhir_user)
    assert one == many == {"message": 2, "refill": 2, "result-review": 1, "unassigned": 4, "mine": 1}
