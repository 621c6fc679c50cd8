"""Every official HL7 R4 example is accepted and comes back as it was sent, on both engines.

Each JSON file in ``hl7-r4-examples/`` is PUT under its own id (update-as-create) and read back,
and POSTed (server-assigned id) with the returned representation checked; the content must equal
the file apart from the server-owned ``meta.versionId``/``meta.lastUpdated`` (and ``id`` on POST).
``Questionnaire-qs1.json`` is the one invalid official example (nested items lack the required
``linkId``) and must be refused with a 400 OperationOutcome naming every missing ``linkId``.

Decimals are compared as text (``parse_float=str``): a FHIR decimal's precision is part of its value
(datatypes.html#decimal), so ``1.00`` must come back as ``1.00``, not ``1.0``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

FHIR = {"Content-Type": "application/fhir+json"}
INVALID = "Questionnaire-qs1.json"


def example_files(fixtures: Path) -> list[Path]:
    files = sorted((fixtures / "hl7-r4-examples").glob("*.json"))
    assert len(files) == 376, f"expected the 376 HL7 examples, found {len(files)}"
    return files


def as_text(raw: bytes) -> Any:
    """JSON with every decimal kept as its text, so precision differences show."""
    return json.loads(raw, parse_float=str)


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = dict(out.pop("meta", None) or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if meta:
        out["meta"] = meta
    return out


def first_difference(expected: Any, actual: Any, path: str = "") -> str:
    """A readable pointer to where two JSON values part ways."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                return f"{path}.{key} missing"
            if key not in expected:
                return f"{path}.{key} added"
            if expected[key] != actual[key]:
                return first_difference(expected[key], actual[key], f"{path}.{key}")
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path} has {len(actual)} items, expected {len(expected)}"
        for n, (a, b) in enumerate(zip(expected, actual, strict=True)):
            if a != b:
                return first_difference(a, b, f"{path}[{n}]")
    return f"{path}: {str(actual)[:80]!r} != {str(expected)[:80]!r}"


def missing_link_ids(items: list[dict[str, Any]], path: str) -> set[str]:
    """The expressions of every Questionnaire item without a linkId, computed from the file."""
    out: set[str] = set()
    for n, item in enumerate(items):
        here = f"{path}.item[{n}]"
        if "linkId" not in item:
            out.add(f"{here}.linkId")
        out |= missing_link_ids(item.get("item", []), here)
    return out


async def test_every_example_round_trips(client: httpx.AsyncClient, fixtures: Path) -> None:
    failures: list[str] = []
    checked = 0
    for path in example_files(fixtures):
        if path.name == INVALID:
            continue
        raw = path.read_bytes()
        sent = as_text(raw)
        res_type, res_id = sent["resourceType"], sent.get("id")
        expected = without_server_meta(sent)

        # PUT keeps the example's own id; read it back.
        if res_id:
            r = await client.put(f"/fhir/{res_type}/{res_id}", content=raw, headers=FHIR)
            if r.status_code not in (200, 201):
                failures.append(f"{path.name}: PUT {r.status_code} {r.text[:200]}")
                continue
            r = await client.get(f"/fhir/{res_type}/{res_id}")
            if r.status_code != 200:
                failures.append(f"{path.name}: GET after PUT {r.status_code}")
                continue
            back = without_server_meta(as_text(r.content))
            if back != expected:
                where = first_difference(expected, back)
                failures.append(f"{path.name}: PUT/GET round trip differs at {where}")

        # POST gets a new id; the representation returned must be the example again.
        r = await client.post(f"/fhir/{res_type}", content=raw, headers=FHIR)
        if r.status_code != 201:
            failures.append(f"{path.name}: POST {r.status_code} {r.text[:200]}")
            continue
        back = without_server_meta(as_text(r.content))
        new_id = back.get("id")
        if (
            not new_id
            or new_id == res_id
            or not r.headers.get("location", "").endswith(f"/{res_type}/{new_id}/_history/1")
        ):
            location = r.headers.get("location")
            failures.append(f"{path.name}: POST answered id {new_id!r}, Location {location!r}")
            continue
        if back != {**expected, "id": new_id}:
            failures.append(f"{path.name}: POST round trip differs at {first_difference(expected, back)}")
        checked += 1
    assert not failures, f"{len(failures)} HL7 examples failed:\n" + "\n".join(failures)
    assert checked == 375


DECIMAL_FILES = ("Observation-decimal.json", "Coverage-7546D.json", "Location-hl7.json")


async def test_decimal_precision_survives_search_and_patch(client: httpx.AsyncClient, fixtures: Path) -> None:
    """The examples with decimals whose text a float would change (1.00, 42.256500, 1.000E-245):
    they come back unchanged from a search, with _elements, and after a JSON Patch elsewhere;
    and changing only the precision (1.00 to 1.0) makes a new version."""
    for name in DECIMAL_FILES:
        raw = (fixtures / "hl7-r4-examples" / name).read_bytes()
        sent = as_text(raw)
        res_type, res_id = sent["resourceType"], sent["id"]
        r = await client.put(f"/fhir/{res_type}/{res_id}", content=raw, headers=FHIR)
        assert r.status_code in (200, 201), r.text
        r = await client.get(f"/fhir/{res_type}", params={"_id": res_id})
        entry = json.loads(r.content, parse_float=str)["entry"][0]["resource"]
        assert without_server_meta(entry) == without_server_meta(sent), name
        keys = ",".join(k for k in sent if k not in ("resourceType", "id", "meta", "text"))
        r = await client.get(f"/fhir/{res_type}/{res_id}", params={"_elements": keys})
        trimmed = as_text(r.content)
        assert {k: v for k, v in trimmed.items() if k in sent and k not in ("meta", "text")} == {
            k: v for k, v in sent.items() if k not in ("meta", "text")
        }, name
        patch = [{"op": "add", "path": "/language", "value": "en-US"}]
        r = await client.patch(
            f"/fhir/{res_type}/{res_id}", json=patch, headers={"Content-Type": "application/json-patch+json"}
        )
        assert r.status_code == 200, r.text
        patched = without_server_meta(as_text(r.content))
        assert patched == {**without_server_meta(sent), "language": "en-US"}, name

    raw = (fixtures / "hl7-r4-examples" / "Observation-decimal.json").read_bytes()
    res_id = as_text(raw)["id"]
    before = (await client.get(f"/fhir/Observation/{res_id}")).json()["meta"]["versionId"]
    assert b'"value":1.00,' in (await client.get(f"/fhir/Observation/{res_id}")).content
    r = await client.put(
        f"/fhir/Observation/{res_id}", content=raw.replace(b'"value": 1.00,', b'"value": 1.0,'), headers=FHIR
    )
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == str(int(before) + 1), "a change of precision is a change"


async def test_questionnaire_without_link_ids_is_rejected(client: httpx.AsyncClient, fixtures: Path) -> None:
    raw = (fixtures / "hl7-r4-examples" / INVALID).read_bytes()
    sent = json.loads(raw)
    expected = missing_link_ids(sent.get("item", []), "Questionnaire")
    assert "Questionnaire.item[0].item[0].linkId" in expected  # what the fixture README describes

    for method, url in (("PUT", f"/fhir/Questionnaire/{sent['id']}"), ("POST", "/fhir/Questionnaire")):
        r = await client.request(method, url, content=raw, headers=FHIR)
        assert r.status_code == 400, f"{method}: {r.status_code} {r.text[:300]}"
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        named = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
        assert named == expected, f"{method}: outcome names {sorted(named)}, expected {sorted(expected)}"
        assert all(i["severity"] == "error" and i["code"] == "required" for i in outcome["issue"])

    r = await client.get(f"/fhir/Questionnaire/{sent['id']}")
    assert r.status_code == 404, "a rejected resource must not be stored"
