"""A small clinic for page tests: one organization with a care pool, a clinician and a nurse on a
patient's care team, a second patient nobody on the team cares for, front desk, and a signed-in
browser (httpx, in-process) for each person. Feature test directories import the fixture in their conftest.py::

    from tests.clinic import Clinic, clinic  # noqa: F401
    from tests.identity.conftest import _clock_back, env, smtp  # noqa: F401

Resources are created as the system of the organization, through the same interactions as the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.identity.service import Account
from tests.identity.conftest import CSRF, Env


@dataclass
class Clinic:
    env: Env
    pool: str  # HealthcareService id: "Primary care nurses"
    patient: str  # Patient id, on the team's care team
    other_patient: str  # Patient id nobody here cares for
    clinician: str  # Practitioner id (Dr Carter)
    nurse: str  # Practitioner id of the nurse (Nurse Nolan)
    browsers: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Store a resource as the organization's system (test set-up)."""
        async with self.env.db.transaction() as conn:
            ctx = ix.Ctx(conn, self.env.settings, "https://testserver/fhir", Access.system(self.env.org_id))
            out = await ix.create(ctx, resource["resourceType"], resource)
        assert out.stored is not None
        return out.stored.resource()

    async def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        async with self.env.db.reader() as conn:
            ctx = ix.Ctx(conn, self.env.settings, "https://testserver/fhir", Access.system(self.env.org_id))
            out = await ix.read(ctx, res_type, res_id)
        assert out.stored is not None
        return out.stored.resource()

    async def search(self, res_type: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        async with self.env.db.reader() as conn:
            ctx = ix.Ctx(conn, self.env.settings, "https://testserver/fhir", Access.system(self.env.org_id))
            result = await ix.search(ctx, ix.search_request(ctx, res_type, query))
        return [s.resource() for s in result.matches]

    async def form_post(self, who: str, path: str, data: dict[str, str], *, form_from: str) -> httpx.Response:
        """Submit a form the way a browser does: take the CSRF token from the page it is on."""
        browser = self.browsers[who]
        page = await browser.get(form_from)
        match = CSRF.search(page.text)
        assert match, (form_from, page.status_code, page.text[:300])
        return await browser.post(path, data={**data, "csrf": match.group(1)})


def text_of(html: str) -> str:
    """The visible text of a page, tags removed and spaces squeezed (for assertions)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
async def clinic(env: Env) -> Clinic:
    async def make(resource: dict[str, Any]) -> str:
        async with env.db.transaction() as conn:
            ctx = ix.Ctx(conn, env.settings, "https://testserver/fhir", Access.system(env.org_id))
            out = await ix.create(ctx, resource["resourceType"], resource)
        assert out.stored is not None
        return out.stored.res_id

    pool = await make({"resourceType": "HealthcareService", "active": True, "name": "Primary care nurses"})
    patient = await make({"resourceType": "Patient", "name": [{"given": ["Ana"], "family": "Reyes"}]})
    other = await make({"resourceType": "Patient", "name": [{"given": ["Ben"], "family": "Other"}]})
    carter = await make({"resourceType": "Practitioner", "name": [{"given": ["Maya"], "family": "Carter"}]})
    nolan = await make({"resourceType": "Practitioner", "name": [{"given": ["Noor"], "family": "Nolan"}]})
    for prac in (carter, nolan):
        await make({"resourceType": "PractitionerRole", "active": True,
                    "practitioner": {"reference": f"Practitioner/{prac}"},
                    "healthcareService": [{"reference": f"HealthcareService/{pool}"}]})  # fmt: skip
    await make({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
                "participant": [{"member": {"reference": f"Practitioner/{carter}"}},
                                {"member": {"reference": f"Practitioner/{nolan}"}}]})  # fmt: skip
    c = Clinic(env, pool, patient, other, carter, nolan)
    c.accounts["patient"] = await env.account("patient", patient_id=patient)
    browser = env.client()
    r = await env.signin(browser, c.accounts["patient"].email, next="/portal")
    assert r.status_code == 303, r.text[:300]
    c.browsers["patient"] = browser
    for who, role, prac in (
        ("clinician", "clinician", carter),
        ("nurse", "nurse", nolan),
        ("desk", "front_desk", None),
    ):
        kw = {"practitioner_id": prac} if prac else {}
        browser, account, _secret = await env.staff_session(role, **kw)
        c.browsers[who], c.accounts[who] = browser, account
    return c


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The notifications features hand to the notification service, (account, kind, path), in
    order; each is still queued for real."""
    from housecall import notify
    from housecall.notify import service as notify_service

    calls: list[tuple[str, str, str]] = []
    real = notify_service.send

    async def send(conn: Any, org_id: str, account_id: str, kind: Any, path: str, **kw: Any) -> str | None:
        calls.append((account_id, notify.Kind(kind).value, path))
        return await real(conn, org_id, account_id, kind, path, **kw)

    monkeypatch.setattr(notify_service, "send", send)
    return calls
