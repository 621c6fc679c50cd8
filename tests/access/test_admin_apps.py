"""Organization admins manage their organization's apps from a page: they see its backend services
and the shared apps, and disabling one of theirs stops its tokens on the next request."""

from __future__ import annotations

import re

import httpx

from tests.identity.conftest import Env
from tests.support import provision_backend, token_request


async def test_an_admin_disables_the_organizations_backend_service(env: Env) -> None:
    url = env.settings.database_url
    mine, secret = await provision_backend(url, env.org_id)
    theirs, _ = await provision_backend(url, env.org_id + "-x")
    transport = httpx.ASGITransport(app=env.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as app_client:
        token = (await app_client.post("/oauth/token", **token_request(mine, secret))).json()["access_token"]  # type: ignore[arg-type]
        auth = {"Authorization": f"Bearer {token}"}
        assert (await app_client.get("/fhir/Patient", headers=auth)).status_code == 200

        admin, _, _ = await env.staff_session("org_admin")
        page = await admin.get("/admin/apps")
        assert page.status_code == 200
        assert f"/admin/apps/{mine}/disable" in page.text and theirs not in page.text
        # Another organization's client cannot be disabled from here.
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
        assert (await admin.post(f"/admin/apps/{theirs}/disable", data={"csrf": csrf})).status_code == 404
        r = await admin.post(f"/admin/apps/{mine}/disable", data={"csrf": csrf})
        assert r.status_code == 303
        assert (await app_client.get("/fhir/Patient", headers=auth)).status_code == 401

        # Not for anyone else.
        patient, _ = await env.patient_session()
        assert (await patient.get("/admin/apps")).status_code == 404
