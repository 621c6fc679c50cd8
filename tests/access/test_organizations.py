"""No query crosses organizations: another organization's backend service (system/*.cruds, the
widest access there is) sees none of this organization's resources, by id, search or history,
and cannot write over them."""

from __future__ import annotations

import httpx

from tests.access.conftest import RECORD_TYPES, World
from tests.support import provision_backend, token_request


async def test_another_organization_sees_nothing(world: World) -> None:
    client_id, secret = await provision_backend(world.url, f"{world.org}-other")
    transport = world.http._transport
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as other:
        r = await other.post("/oauth/token", **token_request(client_id, secret))  # type: ignore[arg-type]
        other.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        for key in "AB":
            pid = world.patients[key]
            assert (await other.get(f"/fhir/Patient/{pid}")).status_code == 404
            assert (await other.get(f"/fhir/Patient/{pid}/$everything")).status_code == 404
            for res_type, res_id in world.records[key]:
                assert (await other.get(f"/fhir/{res_type}/{res_id}")).status_code == 404, res_type
                assert (await other.get(f"/fhir/{res_type}/{res_id}/_history")).status_code == 404
        for res_type in ("Patient", "Practitioner", "Location", "CareTeam", *RECORD_TYPES):
            r = await other.get(f"/fhir/{res_type}?_total=accurate")
            assert r.json()["total"] == 0, res_type
        assert (await other.get("/fhir/_history")).json()["total"] == 0
        # Its own resources live beside ours without mixing.
        r = await other.post(
            "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Elsewhere"}]}
        )
        assert r.status_code == 201
        assert (await world.http.get(f"/fhir/Patient/{r.json()['id']}")).status_code == 404
        # A client-chosen id taken in another organization cannot be taken over.
        pid = world.patients["A"]
        r = await other.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid})
        assert r.status_code == 409
        assert (await world.http.get(f"/fhir/Patient/{pid}")).json()["name"][0]["family"] == "PatientA"
