"""Every official HL7 R4 example is accepted and comes back as it was sent, on both engines.

Each JSON file in ``hl7-r4-examples/`` is PUT under its own id (update-as-create) and read back,
and POSTed (server-assigned id) with the returned representation checked; the content must equal
the file apart from the server-owned ``meta.versionId``/``meta.lastUpdated`` (and ``id`` on POST).
``Questionnaire-qs1.json`` is the one invalid official example (nested items lack the required
``linkId``) and must be refused with a 400 OperationOutcome naming every missing ``linkId``.

Decimals: the comparison is on parsed JSON with Python floats, so ``1.00`` equals ``1.0``. The
server parses and re-serializes with orjson, which keeps the value but not the *text* of a FHIR
decimal: ``1.00`` comes back as ``1.0``, ``20.00`` as ``20.0``, ``42.256500`` as ``42.2565``,
``1.000000000000000000E-245`` as ``1e-245`` and ``66.899999999999991`` as ``66.89999999999999``.
FHIR says a decimal's precision is part of its value (datatypes.html#decimal), so this is a
known limitation; ``test_decimal_text_survives_round_trip`` pins it as a strict xfail so that
whoever fixes it is told to turn it into a plain test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
INVALID = "Questionnaire-qs1.json"


def example_files(fixtures: Path) -> list[Path]:
    files = sorted((fixtures / "hl7-r4-examples").glob("*.json"))
    assert len(files) == 376, f"expected the 376 HL7 examples, found {len(files)}"
    return files


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
        sent = json.loads(raw)
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
            back = without_server_meta(r.json())
            if back != expected:
                where = first_difference(expected, back)
                failures.append(f"{path.name}: PUT/GET round trip differs at {where}")

        # POST gets a new id; the representation returned must be the example again.
        r = await client.post(f"/fhir/{res_type}", content=raw, headers=FHIR)
        if r.status_code != 201:
            failures.append(f"{path.name}: POST {r.status_code} {r.text[:200]}")
            continue
        back = without_server_meta(r.json())
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


DECIMAL_FILES = ("Observation-decimal.json", "Coverage-7546D.json", "Location-hl7.json")


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: decimals are re-serialized by orjson, so 1.00 comes back as 1.0 "
    "(FHIR decimal precision is lost in the text, not in the value)",
)
async def test_decimal_text_survives_round_trip(client: httpx.AsyncClient, fixtures: Path) -> None:
    changed: list[str] = []
    for name in DECIMAL_FILES:
        raw = (fixtures / "hl7-r4-examples" / name).read_bytes()
        sent = json.loads(raw, parse_float=str)
        r = await client.put(f"/fhir/{sent['resourceType']}/{sent['id']}", content=raw, headers=FHIR)
        assert r.status_code in (200, 201), r.text
        r = await client.get(f"/fhir/{sent['resourceType']}/{sent['id']}")
        back = json.loads(r.content, parse_float=str)
        want, got = without_server_meta(sent), without_server_meta(back)
        if got != want:
            changed.append(f"{name}: {first_difference(want, got)}")
    assert not changed, "decimal text changed:\n" + "\n".join(changed)
