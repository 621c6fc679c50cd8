"""Tests for the generated demo organization bundle (housecall.demo.generate)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

try:
    from housecall.demo import generate
except ModuleNotFoundError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from housecall.demo import generate

demo_bundle = generate.demo_bundle
demo_summary = generate.demo_summary

TODAY = dt.date(2026, 3, 9)  # a Monday, the day after the US switch to DST
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
LOINC = "http://loinc.org"

# Required-binding codes the pydantic models do not check themselves.
REQUIRED_CODES = {
    ("Slot", "status"): {"busy", "free", "busy-unavailable", "busy-tentative"},
    ("Appointment", "status"): {"booked", "fulfilled"},
    ("Encounter", "status"): {"finished"},
    ("Observation", "status"): {"final"},
    ("DiagnosticReport", "status"): {"final"},
    ("MedicationRequest", "status"): {"active"},
    ("MedicationRequest", "intent"): {"order"},
    ("Immunization", "status"): {"completed"},
    ("DocumentReference", "status"): {"current"},
    ("DocumentReference", "docStatus"): {"final"},
    ("Coverage", "status"): {"active"},
    ("CareTeam", "status"): {"active"},
    ("Location", "status"): {"active"},
    ("Location", "mode"): {"instance", "kind"},
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("Practitioner", "gender"): {"male", "female", "other", "unknown"},
    ("RelatedPerson", "gender"): {"male", "female", "other", "unknown"},
    ("AllergyIntolerance", "type"): {"allergy", "intolerance"},
    ("AllergyIntolerance", "criticality"): {"low", "high", "unable-to-assess"},
}


@pytest.fixture(scope="module")
def bundle() -> dict:
    return demo_bundle(seed=2026, today=TODAY)


@pytest.fixture(scope="module")
def by_type(bundle) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for entry in bundle["entry"]:
        out[entry["resource"]["resourceType"]].append(entry["resource"])
    return out


@pytest.fixture(scope="module")
def index(bundle) -> dict[str, dict]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in bundle["entry"]}


def _references(node):
    """Every `reference` string anywhere inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _codes(concept: dict) -> set[tuple[str, str]]:
    return {(c.get("system"), c.get("code")) for c in concept.get("coding", [])}


def _patient_of(resource: dict) -> str | None:
    for key in ("subject", "patient", "beneficiary"):
        if key in resource:
            return resource[key]["reference"]
    return None


def _npi_is_valid(npi: str) -> bool:
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


# --------------------------------------------------------------------------
# Bundle mechanics
# --------------------------------------------------------------------------


def test_transaction_entries_are_idempotent_puts(bundle):
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    full_urls = set()
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert ID_RE.match(res["id"]), res["id"]
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
        assert entry["fullUrl"].startswith("urn:uuid:")
        uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:"))
        full_urls.add(entry["fullUrl"])
        assert {"system": generate.TAG_SYSTEM, "code": "demo"}.items() <= res["meta"]["tag"][0].items()
    assert len(full_urls) == len(bundle["entry"])


def test_ids_unique_per_type(bundle):
    keys = Counter((e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"])
    assert [k for k, n in keys.items() if n > 1] == []


def test_every_resource_is_valid_fhir(bundle):
    errors = []
    for entry in bundle["entry"]:
        res = entry["resource"]
        try:
            get_fhir_model_class(res["resourceType"]).model_validate(res)
        except Exception as exc:  # collect all failures, not just the first
            errors.append(f"{res['resourceType']}/{res['id']}: {exc}")
        for (rtype, path), allowed in REQUIRED_CODES.items():
            if res["resourceType"] == rtype and path in res:
                assert res[path] in allowed, (rtype, res["id"], path, res[path])
    assert errors == []


def test_the_bundle_itself_validates(bundle):
    get_fhir_model_class("Bundle").model_validate(bundle)


def test_all_references_resolve_within_the_bundle(bundle, index):
    dangling = [(rid, ref) for rid, res in index.items() for ref in _references(res) if ref not in index]
    assert dangling == []


def test_deterministic_for_seed_and_today():
    first = json.dumps(demo_bundle(seed=7, today=TODAY), sort_keys=False)
    second = json.dumps(demo_bundle(seed=7, today=TODAY), sort_keys=False)
    assert first == second
    other = demo_bundle(seed=8, today=TODAY)
    assert json.dumps(other) != first
    assert other["entry"][0]["resource"]["id"] != json.loads(first)["entry"][0]["resource"]["id"]


@pytest.mark.parametrize(
    "other_day",
    [
        dt.date(2026, 3, 10),
        dt.date(2026, 11, 1),
        dt.date(2028, 2, 29),
        dt.date(2025, 12, 27),
    ],
)
def test_reloading_on_another_day_updates_the_same_ids(bundle, other_day):
    def ids(b):
        return sorted(e["request"]["url"] for e in b["entry"])

    assert ids(demo_bundle(seed=2026, today=other_day)) == ids(bundle)


def test_default_today_and_summary(bundle):
    assert demo_bundle()["type"] == "transaction"
    summary = demo_summary(bundle)
    assert sum(summary.values()) == len(bundle["entry"])
    assert summary == dict(sorted(summary.items()))
    assert summary["Patient"] >= 12


def test_large_seed_keeps_ids_within_limits():
    b = demo_bundle(seed=10**30, today=TODAY)
    assert all(ID_RE.match(e["resource"]["id"]) for e in b["entry"])


# --------------------------------------------------------------------------
# Organization, places, clinicians
# --------------------------------------------------------------------------


def test_organization_and_locations(by_type, index):
    orgs = {o["name"]: o for o in by_type["Organization"]}
    assert "Housecall Demo Health" in orgs
    assert "Demo Health Plan" in orgs
    assert any(
        i["system"] == "https://housecall.example/org" for i in orgs["Housecall Demo Health"]["identifier"]
    )
    physical = [loc for loc in by_type["Location"] if loc["physicalType"]["coding"][0]["code"] != "vi"]
    assert len({loc["address"]["state"] for loc in physical}) >= 2
    for loc in by_type["Location"]:
        assert index[loc["managingOrganization"]["reference"]]["name"] == "Housecall Demo Health"
        assert loc["telecom"]
    virtual = [loc for loc in by_type["Location"] if loc["name"] == "Housecall Virtual Clinic"]
    assert len(virtual) == 1
    assert virtual[0]["mode"] == "kind"
    assert virtual[0]["physicalType"]["coding"][0]["code"] == "vi"


def test_healthcare_services(by_type):
    names = {s["name"] for s in by_type["HealthcareService"]}
    assert names >= {
        "Primary care video visit",
        "Behavioral health video visit",
        "Cardiology e-consult",
        "Remote patient monitoring",
    }


def test_practitioners_have_npi_licences_and_roles(by_type, index):
    practitioners = by_type["Practitioner"]
    assert len(practitioners) >= 6
    for prac in practitioners:
        npis = [i["value"] for i in prac["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-npi"]
        assert len(npis) == 1
        assert re.fullmatch(r"\d{10}", npis[0])
        assert _npi_is_valid(npis[0])
        assert prac["name"]
        assert prac["telecom"]
        assert prac["gender"]
        for q in prac["qualification"]:
            assert q["code"]["text"] == "State medical license"
            state = q["identifier"][0]["system"].rsplit("/", 1)[1]
            assert q["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == state
            assert generate.STATES[state] in q["issuer"]["display"]
            assert q["period"]["start"] < q["period"]["end"]
    roles = by_type["PractitionerRole"]
    assert {r["practitioner"]["reference"] for r in roles} == {
        f"Practitioner/{p['id']}" for p in practitioners
    }
    specialties = {c["code"] for r in roles for s in r["specialty"] for c in s["coding"]}
    assert len(specialties) >= 5
    for role in roles:
        assert role["location"]
        assert role["healthcareService"]
        assert role["availableTime"]
        assert index[role["organization"]["reference"]]["resourceType"] == "Organization"


def test_licence_states_differ_between_clinicians(by_type):
    def current_states(prac):
        return frozenset(
            q["identifier"][0]["system"].rsplit("/", 1)[1]
            for q in prac["qualification"]
            if q["period"]["start"] <= TODAY.isoformat() <= q["period"]["end"]
        )

    kinds = Counter(current_states(p) for p in by_type["Practitioner"])
    assert kinds[frozenset({"VT"})]
    assert kinds[frozenset({"ME"})]
    assert kinds[frozenset({"VT", "ME"})]
    # One lapsed licence exists so expiry rules have something to catch.
    assert any(
        q["period"]["end"] < TODAY.isoformat() for p in by_type["Practitioner"] for q in p["qualification"]
    )


# --------------------------------------------------------------------------
# Scheduling
# --------------------------------------------------------------------------


def test_schedule_per_role_and_slots_in_the_next_two_weeks(by_type, index):
    assert {s["actor"][0]["reference"] for s in by_type["Schedule"]} == {
        f"PractitionerRole/{r['id']}" for r in by_type["PractitionerRole"]
    }
    slots = by_type["Slot"]
    assert 0 < len(slots) <= 400
    for slot in slots:
        start = dt.datetime.fromisoformat(slot["start"])
        end = dt.datetime.fromisoformat(slot["end"])
        assert start.tzinfo is not None
        assert end > start
        assert start.weekday() < 5
        assert TODAY < start.date() <= TODAY + dt.timedelta(days=14)
        assert dt.time(9) <= start.time()
        assert end.time() <= dt.time(12)
        assert start.utcoffset() == generate.eastern_offset(start.date())
        assert slot["serviceType"]
        assert slot["appointmentType"]["coding"][0]["code"] in {"VR", "AMB"}
        assert index[slot["schedule"]["reference"]]["resourceType"] == "Schedule"
    assert {s["status"] for s in slots} == {"free", "busy", "busy-unavailable"}


def test_busy_slots_are_exactly_the_booked_ones(by_type, index):
    booked = [a for a in by_type["Appointment"] if a["status"] == "booked"]
    assert booked
    booked_slots = {a["slot"][0]["reference"] for a in booked}
    busy = {f"Slot/{s['id']}" for s in by_type["Slot"] if s["status"] == "busy"}
    assert booked_slots == busy
    assert len(booked) == len(busy)
    for appt in booked:
        slot = index[appt["slot"][0]["reference"]]
        assert (appt["start"], appt["end"]) == (slot["start"], slot["end"])
    # No patient is double-booked.
    per_patient = defaultdict(list)
    for appt in booked:
        patient = next(
            p["actor"]["reference"]
            for p in appt["participant"]
            if p["actor"]["reference"].startswith("Patient/")
        )
        per_patient[patient].append(
            (dt.datetime.fromisoformat(appt["start"]), dt.datetime.fromisoformat(appt["end"]))
        )
    for spans in per_patient.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_eastern_offset_matches_tz_database():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        tz = zoneinfo.ZoneInfo("America/New_York")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no tz database on this machine")
    day = dt.date(2024, 1, 1)
    while day < dt.date(2028, 1, 1):
        noon = dt.datetime.combine(day, dt.time(9), tzinfo=tz)
        assert generate.eastern_offset(day) == noon.utcoffset(), day
        day += dt.timedelta(days=1)


# --------------------------------------------------------------------------
# Patients and their charts
# --------------------------------------------------------------------------


def test_patients_are_varied(by_type):
    patients = by_type["Patient"]
    assert len(patients) >= 12
    names = {p["name"][0]["text"] for p in patients}
    assert any("José" in n and "Núñez" in n for n in names)
    assert any("-" in p["name"][0]["family"] for p in patients)
    assert {p["gender"] for p in patients} >= {"male", "female"}
    ages = [(TODAY - dt.date.fromisoformat(p["birthDate"])).days // 365 for p in patients]
    assert min(ages) < 18
    assert max(ages) >= 75
    assert {p["address"][0]["state"] for p in patients} == {"VT", "ME"}
    spanish = [p for p in patients if p["communication"][0]["language"]["coding"][0]["code"] == "es"]
    assert len(spanish) >= 2
    for p in patients:
        assert p["telecom"]
        assert p["generalPractitioner"]
        assert p["identifier"][0]["system"] == "https://housecall.example/mrn"


def test_children_share_a_parent(by_type, index):
    by_person = defaultdict(set)
    for rp in by_type["RelatedPerson"]:
        codes = {c for concept in rp["relationship"] for c in _codes(concept)}
        if codes & {(generate.ROLE_CODE, "MTH"), (generate.ROLE_CODE, "PRN"), (generate.ROLE_CODE, "FTH")}:
            by_person[rp["identifier"][0]["value"]].add(rp["patient"]["reference"])
    shared = [patients for patients in by_person.values() if len(patients) >= 2]
    assert shared
    for patients in shared:
        for ref in patients:
            birth = dt.date.fromisoformat(index[ref]["birthDate"])
            assert (TODAY - birth).days < 18 * 365
    # The mother is also a patient and links back to her RelatedPerson records.
    linked = [p for p in by_type["Patient"] if p.get("link")]
    assert linked
    assert all(
        index[lk["other"]["reference"]]["resourceType"] == "RelatedPerson" for p in linked for lk in p["link"]
    )


def test_every_patient_has_a_history(by_type):
    per_patient = defaultdict(Counter)
    for rtype, resources in by_type.items():
        for res in resources:
            if (ref := _patient_of(res)) and ref.startswith("Patient/"):
                per_patient[ref][rtype] += 1
    for p in by_type["Patient"]:
        counts = per_patient[f"Patient/{p['id']}"]
        assert 2 <= counts["Encounter"] <= 6, (p["id"], counts)
        assert counts["Condition"] or counts["Observation"]
        assert counts["CareTeam"] == 1
        assert counts["Immunization"] >= 1
        assert counts["DocumentReference"] == counts["Encounter"]
    insured = {c["beneficiary"]["reference"] for c in by_type["Coverage"]}
    assert len(insured) >= len(by_type["Patient"]) * 2 // 3


def test_encounters_are_coded(by_type):
    classes = Counter(e["class"]["code"] for e in by_type["Encounter"])
    assert classes["VR"] > classes["AMB"] > 0
    for enc in by_type["Encounter"]:
        assert enc["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
        assert enc["appointment"]


def test_conditions_use_snomed(by_type):
    codes = {c["code"]["coding"][0]["code"] for c in by_type["Condition"]}
    assert codes >= {"38341003", "44054006", "195967001", "35489007", "42343007", "49436004"}
    assert all(c["code"]["coding"][0]["system"] == "http://snomed.info/sct" for c in by_type["Condition"])


def test_observations(by_type, index):
    codes = Counter()
    for obs in by_type["Observation"]:
        codes.update(c for c in _codes(obs["code"]) if c[0] == LOINC)
        assert obs["effectiveDateTime"]
        assert obs["category"]
        quantities = (
            [obs["valueQuantity"]]
            if "valueQuantity" in obs
            else [comp["valueQuantity"] for comp in obs["component"]]
        )
        for q in quantities:
            assert q["system"] == "http://unitsofmeasure.org"
            assert q["code"]
        for part in [obs, *obs.get("component", [])]:
            if "valueQuantity" in part and part.get("referenceRange"):
                rng = part["referenceRange"][0]
                value = part["valueQuantity"]["value"]
                abnormal = (
                    value > rng.get("high", {"value": float("inf")})["value"]
                    or value < rng.get("low", {"value": float("-inf")})["value"]
                )
                assert bool(part.get("interpretation")) == abnormal, obs["id"]
    for code in (
        "85354-9",
        "8480-6",
        "8462-4",
        "8867-4",
        "29463-7",
        "59408-5",
        "2708-6",
        "2339-0",
        "4548-4",
        "8310-5",
        "41950-7",
        "55423-8",
    ):
        assert codes[(LOINC, code)] or any(
            (LOINC, code) in _codes(comp["code"])
            for obs in by_type["Observation"]
            for comp in obs.get("component", [])
        ), code
    assert any(
        o.get("interpretation") or any(c.get("interpretation") for c in o.get("component", []))
        for o in by_type["Observation"]
    )
    for report in by_type["DiagnosticReport"]:
        assert report["result"]
        for ref in report["result"]:
            lab = index[ref["reference"]]
            assert lab["category"][0]["coding"][0]["code"] == "laboratory"
            assert lab["subject"] == report["subject"]


def test_medications_allergies_immunizations(by_type, index):
    for rx in by_type["MedicationRequest"]:
        coding = rx["medicationCodeableConcept"]["coding"][0]
        assert coding["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
        assert rx["dosageInstruction"][0]["text"]
        assert index[rx["requester"]["reference"]]["resourceType"] == "Practitioner"
        assert rx["dispenseRequest"]["numberOfRepeatsAllowed"] >= 0
    allergy_codes = {a["code"]["coding"][0]["code"] for a in by_type["AllergyIntolerance"]}
    assert "409137002" in allergy_codes  # NKDA
    assert all(
        i["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/cvx"
        for i in by_type["Immunization"]
    )


def test_after_visit_summaries_are_small_plain_text(by_type, index):
    for doc in by_type["DocumentReference"]:
        attachment = doc["content"][0]["attachment"]
        assert attachment["contentType"] == "text/plain"
        text = base64.b64decode(attachment["data"]).decode("utf-8")
        assert 0 < len(text) < 2000
        patient = index[doc["subject"]["reference"]]
        preferred = patient["communication"][0]["language"]["coding"][0]["code"]
        assert attachment["language"] == preferred
        assert ("Resumen de la visita" in text) == (preferred == "es")


def test_care_teams_and_encounters_respect_licensure(by_type, index):
    """Whoever treats or books a patient is currently licensed in the patient's state."""

    def licensed(prac_ref: str, state: str) -> bool:
        return any(
            q["identifier"][0]["system"].endswith(f"/{state}")
            and q["period"]["start"] <= TODAY.isoformat() <= q["period"]["end"]
            for q in index[prac_ref]["qualification"]
        )

    checked = 0
    for rtype in ("CareTeam", "Encounter", "Appointment", "MedicationRequest", "DocumentReference"):
        for res in by_type[rtype]:
            patient_ref = _patient_of(res) or next(
                p["actor"]["reference"]
                for p in res["participant"]
                if p["actor"]["reference"].startswith("Patient/")
            )
            state = index[patient_ref]["address"][0]["state"]
            for ref in _references(res):
                if ref.startswith("Practitioner/"):
                    assert licensed(ref, state), (rtype, res["id"], ref, state)
                    checked += 1
    assert checked > 100
    for team in by_type["CareTeam"]:
        members = [p["member"]["reference"] for p in team["participant"]]
        assert sum(m.startswith("Practitioner/") for m in members) >= 2
