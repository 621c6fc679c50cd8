"""Tests for housecall.fhir.indexing: search-index extraction, the registry, date bounds, strings
and the Patient compartment.

Fixtures live outside the repository (``../shared/fixtures`` next to the work tree, or
``$HOUSECALL_FIXTURES``); when they are missing the tests fail instead of skipping, so a CI run
without the data cannot pass silently.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

try:
    import housecall.fhir.indexing  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from housecall.fhir.indexing import (
    SUBSET_ALIASES,
    IndexRows,
    SearchParam,
    date_bounds,
    extract_index,
    normalize_string,
    search_params,
    stored_reference,
)
from housecall.fhir.indexing import _r4_search_params as table

FIXTURES = Path(
    os.environ.get("HOUSECALL_FIXTURES") or Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
)
HL7 = FIXTURES / "hl7-r4-examples"
SYNTHEA = FIXTURES / "synthea"

MIN, MAX = -(2**62), 2**62

VITALS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "x",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/abc"},
    "effectiveDateTime": "2024-05-01T09:00:00+00:00",
    "valueQuantity": {
        "value": 120,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    },
}


def us(iso: str) -> int:
    """Independent oracle: µs since the epoch of an ISO instant (with zone), via datetime."""
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    delta = dt - datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def day(d: str) -> tuple[int, int]:
    lo = us(f"{d}T00:00:00Z")
    return lo, lo + 86_400_000_000 - 1


def second(iso: str) -> tuple[int, int]:
    lo = us(iso)
    return lo, lo + 999_999


def require_fixtures(path: Path) -> Path:
    if not path.is_dir():
        pytest.fail(
            f"test fixtures missing: {path} (set HOUSECALL_FIXTURES to the shared/fixtures folder)",
            pytrace=False,
        )
    return path


@cache
def example(name: str) -> dict[str, Any]:
    return json.loads((require_fixtures(HL7) / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def resources_in(res: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield res
    if res.get("resourceType") == "Bundle":
        for entry in res.get("entry", []):
            if isinstance(entry.get("resource"), dict):
                yield from resources_in(entry["resource"])


def resolve_urn_uuids(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """What the store does on a transaction: ``urn:uuid:`` fullUrls become ``Type/id``."""
    ids: dict[str, str] = {}
    for entry in bundle["entry"]:
        res = entry["resource"]
        ids[entry["fullUrl"]] = f"{res['resourceType']}/{res['id']}"

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fix(v) for k, v in node.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref in ids:
                out["reference"] = ids[ref]
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return [fix(e["resource"]) for e in bundle["entry"]]


ROW_KINDS = ("token", "string", "reference", "date", "quantity", "number", "uri")
PARAM_TYPE_OF_KIND = {k: k for k in ROW_KINDS}


def check_invariants(res: dict[str, Any], rows: IndexRows) -> None:
    """Every row: right shape and types, de-duplicated, a known indexed param of the right type."""
    params = search_params(res["resourceType"])
    for kind in ROW_KINDS:
        lst = getattr(rows, kind)
        assert len(lst) == len(set(lst)), f"duplicate {kind} rows"
        for row in lst:
            sp = params.get(row[0])
            assert sp is not None, f"{res['resourceType']}: unknown param in {row}"
            assert sp.indexed
            assert sp.type == PARAM_TYPE_OF_KIND[kind], (row, sp)
            if kind == "token":
                assert all(v is None or (isinstance(v, str) and v) for v in row[1:]), row
                assert any(v is not None for v in row[1:]), row
            elif kind == "string":
                assert isinstance(row[1], str), row
                assert isinstance(row[2], str), row
                assert row[2], row
                assert row[1] == normalize_string(row[2])
            elif kind == "reference":
                assert all(v is None or isinstance(v, str) for v in row[1:]), row
                assert row[2] is not None or row[3] is not None, row
                # A contained target has its type (so that resolve() is T can be read from the
                # row) but no id; any other target has both or neither.
                contained = row[3] is not None and row[3].startswith("#")
                assert (row[1] is None) == (row[2] is None) or (contained and row[2] is None), row
            elif kind == "date":
                assert isinstance(row[1], int), row
                assert isinstance(row[2], int), row
                assert MIN <= row[1] <= MAX, row
                assert MIN <= row[2] <= MAX, row
            elif kind in ("quantity", "number"):
                assert type(row[1]) is float, row
            else:
                assert isinstance(row[1], str), row
                assert row[1], row
    assert all(isinstance(p, str) and p for p in rows.patients)


# ------------------------------------------------------------------------------------------------
# Whole fixture sets
# ------------------------------------------------------------------------------------------------


def test_fixtures_present() -> None:
    require_fixtures(HL7)
    require_fixtures(SYNTHEA)
    assert len(list(HL7.glob("*.json"))) > 300
    assert len(list(SYNTHEA.glob("*.json"))) >= 30


def test_every_hl7_example_indexes() -> None:
    files = sorted(require_fixtures(HL7).glob("*.json"))
    n = 0
    for path in files:
        res = json.loads(path.read_text(encoding="utf-8"))
        for r in resources_in(res):
            rows = extract_index(r)
            check_invariants(r, rows)
            n += 1
    assert n > 700


def test_every_synthea_resource_indexes_and_lands_in_its_patient_compartment() -> None:
    files = sorted(require_fixtures(SYNTHEA).glob("*.json"))
    total = in_compartment = 0
    for path in files:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources = resolve_urn_uuids(bundle)
        patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
        for r in resources:
            rows = extract_index(r)
            check_invariants(r, rows)
            total += 1
            if r["resourceType"] in table.COMPARTMENT_PATIENT or r["resourceType"] == "Patient":
                # A patient bundle holds one Patient; everything clinical in it is theirs.
                assert rows.patients == set(patients), (path.name, r["resourceType"], r["id"])
                in_compartment += 1
            else:
                assert rows.patients == set(), (r["resourceType"], r["id"])
    assert total > 9_500  # 9,692 resources in 30 bundles
    assert in_compartment > 9_000  # all but the 298 Organizations and Practitioners


def test_unresolved_urn_uuid_keeps_url_and_names_no_patient() -> None:
    obs = {**VITALS, "subject": {"reference": "urn:uuid:1f3c0e9e-0000-4000-8000-000000000001"}}
    rows = extract_index(obs)
    assert ("subject", None, None, "urn:uuid:1f3c0e9e-0000-4000-8000-000000000001") in rows.reference
    assert not [r for r in rows.reference if r[0] == "patient"]  # resolve() is Patient: unknown
    assert rows.patients == set()


# ------------------------------------------------------------------------------------------------
# Hand-checked expectations (values read off the JSON of each example)
# ------------------------------------------------------------------------------------------------

BP = "Observation-blood-pressure.json"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"

EXPECT: list[tuple[str, str | dict[str, Any], str, tuple[Any, ...]]] = [
    # Typical vital sign (the benchmark resource)
    ("vitals-subject", VITALS, "reference", ("subject", "Patient", "abc", None)),
    ("vitals-patient", VITALS, "reference", ("patient", "Patient", "abc", None)),
    ("vitals-code", VITALS, "token", ("code", LOINC, "8480-6", None)),
    ("vitals-status", VITALS, "token", ("status", None, "final", None)),
    ("vitals-value", VITALS, "quantity", ("value-quantity", 120.0, UCUM, "mm[Hg]", "mmHg")),
    ("vitals-date", VITALS, "date", ("date", *second("2024-05-01T09:00:00Z"))),
    # Observation-blood-pressure.json
    ("bp-subject", BP, "reference", ("subject", "Patient", "example", None)),
    ("bp-patient", BP, "reference", ("patient", "Patient", "example", None)),
    ("bp-performer", BP, "reference", ("performer", "Practitioner", "example", None)),
    ("bp-code", BP, "token", ("code", LOINC, "85354-9", "blood pressure systolic & diastolic")),
    ("bp-component-code", BP, "token", ("component-code", LOINC, "8480-6", "systolic blood pressure")),
    ("bp-component-dia", BP, "token", ("component-code", LOINC, "8462-4", "diastolic blood pressure")),
    # combo-code is answered from code + component-code (UNION_ALIASES); this is its component half.
    ("bp-combo-code", BP, "token", ("component-code", SCT, "271649006", "systolic blood pressure")),
    ("bp-component-value", BP, "quantity", ("component-value-quantity", 107.0, UCUM, "mm[Hg]", "mmHg")),
    ("bp-date", BP, "date", ("date", *day("2012-09-17"))),
    ("bp-profile", BP, "uri", ("_profile", "http://hl7.org/fhir/StructureDefinition/vitalsigns")),
    (
        "bp-category",
        BP,
        "token",
        (
            "category",
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "vital-signs",
            "vital signs",
        ),
    ),
    # Patient-example.json
    ("pat-name-family", "Patient-example.json", "string", ("name", "chalmers", "Chalmers")),
    ("pat-name-given", "Patient-example.json", "string", ("name", "jim", "Jim")),
    ("pat-family", "Patient-example.json", "string", ("family", "windsor", "Windsor")),
    ("pat-given", "Patient-example.json", "string", ("given", "peter", "Peter")),
    ("pat-birthdate", "Patient-example.json", "date", ("birthdate", *day("1974-12-25"))),
    (
        "pat-identifier",
        "Patient-example.json",
        "token",
        ("identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", None),
    ),
    ("pat-gender", "Patient-example.json", "token", ("gender", None, "male", None)),
    ("pat-telecom", "Patient-example.json", "token", ("telecom", None, "(03) 5555 6473", None)),
    ("pat-phone", "Patient-example.json", "token", ("phone", None, "(03) 3410 5613", None)),
    ("pat-active", "Patient-example.json", "token", ("active", None, "true", None)),
    ("pat-deceased", "Patient-example.json", "token", ("deceased", None, "false", None)),
    ("pat-address-state", "Patient-example.json", "string", ("address-state", "vic", "Vic")),
    ("pat-address-line", "Patient-example.json", "string", ("address", "534 erewhon st", "534 Erewhon St")),
    ("pat-address-district", "Patient-example.json", "string", ("address", "rainbow", "Rainbow")),
    ("pat-address-use", "Patient-example.json", "token", ("address-use", None, "home", None)),
    ("pat-organization", "Patient-example.json", "reference", ("organization", "Organization", "1", None)),
    ("pat-link", "Patient-pat1.json", "reference", ("link", "Patient", "pat2", None)),
    # Encounter-home.json: Period with zones
    (
        "enc-date",
        "Encounter-home.json",
        "date",
        ("date", us("2015-01-17T06:00:00Z"), us("2015-01-17T06:30:00Z") + 999_999),
    ),
    ("enc-patient", "Encounter-home.json", "reference", ("patient", "Patient", "example", None)),
    ("enc-location-contained", "Encounter-home.json", "reference", ("location", "Location", None, "#home")),
    ("enc-length", "Encounter-f202.json", "quantity", ("length", 56.0, UCUM, "min", "minutes")),
    (
        "enc-reason-text-only",
        "Encounter-f202.json",
        "token",
        ("reason-code", None, None, "the patient is treated for a tumor."),
    ),
    ("enc-practitioner", "Encounter-f202.json", "reference", ("practitioner", "Practitioner", "f201", None)),
    # Appointment-example.json
    ("appt-actor-patient", "Appointment-example.json", "reference", ("actor", "Patient", "example", None)),
    ("appt-actor-loc", "Appointment-example.json", "reference", ("actor", "Location", "1", None)),
    ("appt-patient", "Appointment-example.json", "reference", ("patient", "Patient", "example", None)),
    (
        "appt-practitioner",
        "Appointment-example.json",
        "reference",
        ("practitioner", "Practitioner", "example", None),
    ),
    ("appt-location", "Appointment-example.json", "reference", ("location", "Location", "1", None)),
    ("appt-date", "Appointment-example.json", "date", ("date", *second("2013-12-10T09:00:00Z"))),
    ("appt-part-status", "Appointment-example.json", "token", ("part-status", None, "accepted", None)),
    # MedicationRequest-medrx0302.json: medication is a contained reference, not a code
    (
        "mr-medication",
        "MedicationRequest-medrx0302.json",
        "reference",
        ("medication", "Medication", None, "#med0320"),
    ),
    ("mr-subject", "MedicationRequest-medrx0302.json", "reference", ("subject", "Patient", "pat1", None)),
    (
        "mr-requester",
        "MedicationRequest-medrx0302.json",
        "reference",
        ("requester", "Practitioner", "f007", None),
    ),
    ("mr-authoredon", "MedicationRequest-medrx0302.json", "date", ("authoredon", *day("2015-01-15"))),
    ("mr-intent", "MedicationRequest-medrx0302.json", "token", ("intent", None, "order", None)),
    (
        "mr-identifier",
        "MedicationRequest-medrx0302.json",
        "token",
        ("identifier", "http://www.bmc.nl/portal/prescriptions", "12345689", None),
    ),
    # Condition-example.json
    ("cond-onset", "Condition-example.json", "date", ("onset-date", *day("2012-05-24"))),
    ("cond-code", "Condition-example.json", "token", ("code", SCT, "39065001", "burnt ear")),
    ("cond-patient", "Condition-example.json", "reference", ("patient", "Patient", "example", None)),
    # Slot-1.json / Schedule-example.json
    ("slot-start", "Slot-1.json", "date", ("start", *second("2013-12-25T09:00:00Z"))),
    ("slot-schedule", "Slot-1.json", "reference", ("schedule", "Schedule", "example", None)),
    ("slot-status", "Slot-1.json", "token", ("status", None, "busy", None)),
    ("slot-service-category", "Slot-1.json", "token", ("service-category", None, "17", "general practice")),
    ("sched-actor", "Schedule-example.json", "reference", ("actor", "Location", "1", None)),
    (
        "sched-date",
        "Schedule-example.json",
        "date",
        ("date", us("2013-12-25T09:15:00Z"), us("2013-12-25T09:30:00Z") + 999_999),
    ),
    # Practitioner-example.json
    ("prac-name", "Practitioner-example.json", "string", ("name", "careful", "Careful")),
    ("prac-name-prefix", "Practitioner-example.json", "string", ("name", "dr", "Dr")),
    ("prac-given", "Practitioner-example.json", "string", ("given", "adam", "Adam")),
    ("prac-city", "Practitioner-example.json", "string", ("address-city", "pleasantville", "PleasantVille")),
    (
        "prac-identifier",
        "Practitioner-example.json",
        "token",
        ("identifier", "http://www.acme.org/practitioners", "23", None),
    ),
    # AllergyIntolerance-example.json
    ("ai-patient", "AllergyIntolerance-example.json", "reference", ("patient", "Patient", "example", None)),
    (
        "ai-recorder",
        "AllergyIntolerance-example.json",
        "reference",
        ("recorder", "Practitioner", "example", None),
    ),
    ("ai-asserter", "AllergyIntolerance-example.json", "reference", ("asserter", "Patient", "example", None)),
    ("ai-code", "AllergyIntolerance-example.json", "token", ("code", SCT, "227493005", "cashew nuts")),
    ("ai-criticality", "AllergyIntolerance-example.json", "token", ("criticality", None, "high", None)),
    ("ai-date", "AllergyIntolerance-example.json", "date", ("date", *second("2014-10-09T03:58:00Z"))),
    (
        "ai-last-date",
        "AllergyIntolerance-example.json",
        "date",
        ("last-date", us("2012-06-01T00:00:00Z"), us("2012-07-01T00:00:00Z") - 1),
    ),
    (
        "ai-onset-year",
        "AllergyIntolerance-example.json",
        "date",
        ("onset", us("2004-01-01T00:00:00Z"), us("2005-01-01T00:00:00Z") - 1),
    ),
    # CarePlan-example.json
    ("cp-patient", "CarePlan-example.json", "reference", ("patient", "Patient", "example", None)),
    ("cp-date-open-start", "CarePlan-example.json", "date", ("date", MIN, day("2017-06-01")[1])),
    (
        "cp-category-text",
        "CarePlan-example.json",
        "token",
        ("category", None, None, "weight management plan"),
    ),
    (
        "cp-activity-code",
        "CarePlan-example.json",
        "token",
        ("activity-code", LOINC, "3141-9", "weight measured"),
    ),
    ("cp-goal", "CarePlan-example.json", "reference", ("goal", "Goal", "example", None)),
    (
        "cp-instantiates-uri",
        "CarePlan-example.json",
        "uri",
        ("instantiates-uri", "http://example.org/protocol-for-obesity"),
    ),
    # Consent-consent-example-basic.json
    (
        "consent-patient",
        "Consent-consent-example-basic.json",
        "reference",
        ("patient", "Patient", "f001", None),
    ),
    ("consent-date", "Consent-consent-example-basic.json", "date", ("date", *day("2016-05-11"))),
    (
        "consent-period",
        "Consent-consent-example-basic.json",
        "date",
        ("period", day("1964-01-01")[0], day("2016-01-01")[1]),
    ),
    (
        "consent-scope",
        "Consent-consent-example-basic.json",
        "token",
        ("scope", "http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", None),
    ),
    (
        "consent-org",
        "Consent-consent-example-basic.json",
        "reference",
        ("organization", "Organization", "f001", None),
    ),
    # Communication-example.json
    ("comm-subject", "Communication-example.json", "reference", ("subject", "Patient", "example", None)),
    ("comm-sender", "Communication-example.json", "reference", ("sender", "Device", "f001", None)),
    (
        "comm-recipient",
        "Communication-example.json",
        "reference",
        ("recipient", "Practitioner", "example", None),
    ),
    ("comm-sent", "Communication-example.json", "date", ("sent", *second("2014-12-13T02:01:10Z"))),
    (
        "comm-identifier-type-text",
        "Communication-example.json",
        "token",
        ("identifier", "urn:oid:1.3.4.5.6.7", "2345678901", "paging system"),
    ),
    (
        "comm-category",
        "Communication-example.json",
        "token",
        ("category", "http://acme.org/messagetypes", "Alert", "alert"),
    ),
    # Task-example1.json
    ("task-patient", "Task-example1.json", "reference", ("patient", "Patient", "example", None)),
    (
        "task-owner",
        "Task-example1.json",
        "reference",
        ("owner", "Organization", "1832473e-2fe0-452d-abe9-3cdb9879522f", None),
    ),
    ("task-authored", "Task-example1.json", "date", ("authored-on", *second("2016-10-30T22:25:05Z"))),
    ("task-period-open-end", "Task-example1.json", "date", ("period", us("2016-10-30T22:25:05Z"), MAX)),
    ("task-code-text", "Task-example1.json", "token", ("code", None, None, "lipid panel")),
    ("task-priority", "Task-example1.json", "token", ("priority", None, "routine", None)),
    ("task-focus", "Task-example1.json", "reference", ("focus", "ServiceRequest", "lipid", None)),
]

ABSENT: list[tuple[str, str | dict[str, Any], str, str]] = [
    # basedOn holds only an identifier: nothing to match on
    ("bp-based-on", BP, "reference", "based-on"),
    # no top-level value[x] on a panel
    ("bp-value-quantity", BP, "quantity", "value-quantity"),
    # medication is a Reference here, so the CodeableConcept-only `code` param has nothing
    ("mr-code", "MedicationRequest-medrx0302.json", "token", "code"),
    # Encounter-example has no period
    ("enc-no-period", "Encounter-example.json", "date", "date"),
    # an Observation has no name
    ("vitals-no-string", VITALS, "string", "name"),
]


def load(src: str | dict[str, Any]) -> dict[str, Any]:
    return src if isinstance(src, dict) else example(src)


@pytest.mark.parametrize(("case", "src", "kind", "row"), EXPECT, ids=[e[0] for e in EXPECT])
def test_expected_row(case: str, src: str | dict[str, Any], kind: str, row: tuple[Any, ...]) -> None:
    resource = load(src)
    rows = getattr(extract_index(resource), kind)
    parent, target = (
        stored_reference(resource["resourceType"], row[0]) if kind == "reference" else (row[0], None)
    )
    if target is not None:
        # A restriction of another parameter (Observation's patient: subject of a Patient) is
        # stored as that parameter's row with that target type, and has no row of its own.
        assert row[1] == target
        assert not [r for r in rows if r[0] == row[0]], case
        row = (parent, *row[1:])
    assert row in rows, f"{case}: {row} not in {[r for r in rows if r[0] == row[0]]}"


@pytest.mark.parametrize(("case", "src", "kind", "param"), ABSENT, ids=[a[0] for a in ABSENT])
def test_absent_rows(case: str, src: str | dict[str, Any], kind: str, param: str) -> None:
    rows = getattr(extract_index(load(src)), kind)
    assert [r for r in rows if r[0] == param] == []


def test_restricted_reference_params_are_read_from_the_rows_they_restrict() -> None:
    rows = extract_index(example("Appointment-example.json")).reference
    assert {r[1] for r in rows if r[0] == "actor"} == {"Location", "Patient", "Practitioner"}
    assert not [r for r in rows if r[0] in ("location", "patient", "practitioner")]
    assert SUBSET_ALIASES["Appointment"] == {
        "location": ("actor", "Location"), "patient": ("actor", "Patient"), "practitioner": ("actor", "Practitioner")
    }  # fmt: skip
    assert stored_reference("Observation", "patient") == ("subject", "Patient")
    assert stored_reference("AllergyIntolerance", "patient") == ("patient", None)  # an element of its own


def test_vitals_rows_exactly() -> None:
    rows = extract_index(VITALS)
    assert rows.date == [("date", *second("2024-05-01T09:00:00Z"))]
    assert sorted(rows.reference) == [("subject", "Patient", "abc", None)]  # patient: read from subject
    assert sorted(rows.quantity) == [("value-quantity", 120.0, UCUM, "mm[Hg]", "mmHg")]
    assert rows.string == []
    assert rows.number == []
    assert rows.uri == []
    assert rows.patients == {"abc"}


def test_rows_are_deduplicated_and_deterministic() -> None:
    obs = {**VITALS, "category": VITALS["category"] * 3, "performer": [{"reference": "Patient/abc"}] * 2}
    a, b = extract_index(obs), extract_index(json.loads(json.dumps(obs)))
    assert a == b
    assert [r for r in a.token if r[0] == "category"] == [
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", None)
    ]
    assert a.reference.count(("performer", "Patient", "abc", None)) == 1


# ------------------------------------------------------------------------------------------------
# Value types, one at a time
# ------------------------------------------------------------------------------------------------


def test_reference_forms() -> None:
    def refs(ref: str) -> list[tuple[Any, ...]]:
        obs = {"resourceType": "Observation", "status": "final", "code": {}, "subject": {"reference": ref}}
        return [r for r in extract_index(obs).reference if r[0] == "subject"]

    assert refs("Patient/123") == [("subject", "Patient", "123", None)]
    assert refs("Patient/123/_history/2") == [("subject", "Patient", "123", None)]
    url = "http://example.org/fhir/Patient/123/_history/2"
    assert refs(url) == [("subject", "Patient", "123", url)]
    url = "https://x.example/fhir/Group/g1"
    assert refs(url) == [("subject", "Group", "g1", url)]
    assert refs("urn:uuid:0b3c") == [("subject", None, None, "urn:uuid:0b3c")]
    assert refs("#p1") == [("subject", None, None, "#p1")]  # no such contained resource
    assert refs("http://example.org/not-a-resource") == [
        ("subject", None, None, "http://example.org/not-a-resource")
    ]
    obs = {"resourceType": "Observation", "subject": {"identifier": {"system": "s", "value": "v"}}}
    assert extract_index(obs).reference == []


def test_contained_reference_is_resolved_for_type_restrictions() -> None:
    obs = {
        "resourceType": "Observation",
        "contained": [{"resourceType": "Patient", "id": "p1"}],
        "subject": {"reference": "#p1"},
    }
    rows = extract_index(obs)
    assert ("subject", "Patient", None, "#p1") in rows.reference  # so patient:missing is false
    assert rows.patients == set()  # a contained Patient has no compartment of its own


def test_canonical_reference_and_uri() -> None:
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://example.org/Questionnaire/phq-9|1.0",
        "status": "completed",
    }
    assert ("questionnaire", None, None, "http://example.org/Questionnaire/phq-9|1.0") in extract_index(
        qr
    ).reference
    q = {"resourceType": "Questionnaire", "url": "http://example.org/Questionnaire/phq-9", "status": "active"}
    assert ("url", "http://example.org/Questionnaire/phq-9") in extract_index(q).uri


def test_meta_params_on_every_type() -> None:
    for rtype in ("Patient", "Binary", "Bundle", "Slot"):
        params = search_params(rtype)
        for code in ("_profile", "_tag", "_security", "_source"):
            assert params[code].indexed, (rtype, code)
        assert "_id" not in params
        assert "_lastUpdated" not in params
    res = {
        "resourceType": "Binary",
        "contentType": "text/plain",
        "meta": {
            "profile": ["http://example.org/p"],
            "tag": [{"system": "http://example.org/tags", "code": "demo", "display": "Demo data"}],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
            "source": "http://example.org/source#a",
        },
    }
    rows = extract_index(res)
    assert ("_profile", "http://example.org/p") in rows.uri
    assert ("_source", "http://example.org/source#a") in rows.uri
    assert ("_tag", "http://example.org/tags", "demo", "demo data") in rows.token
    assert ("_security", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R", None) in rows.token


def test_quantity_money_range_and_number() -> None:
    claim = {
        "resourceType": "Invoice",
        "status": "issued",
        "totalNet": {"value": 40.5, "currency": "EUR"},
    }
    assert ("totalnet", 40.5, "urn:iso:std:iso:4217", "EUR", None) in extract_index(claim).quantity
    cond = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "onsetRange": {"low": {"value": 30, "unit": "a"}, "high": {"value": 40, "unit": "a"}},
    }
    q = extract_index(cond).quantity
    assert ("onset-age", 30.0, None, None, "a") in q
    assert ("onset-age", 40.0, None, None, "a") in q
    ra = {"resourceType": "RiskAssessment", "status": "final", "prediction": [{"probabilityDecimal": 0.25}]}
    assert extract_index(ra).number == [("probability", 0.25)]
    bad = {**VITALS, "valueQuantity": {"value": "120", "code": "mm[Hg]"}}
    assert [r for r in extract_index(bad).quantity if r[0] == "value-quantity"] == []
    boolean = {**VITALS, "valueQuantity": {"value": True}}
    assert [r for r in extract_index(boolean).quantity if r[0] == "value-quantity"] == []


def test_date_forms_timing_and_malformed() -> None:
    mr = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p"},
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "scheduledTiming": {
                        "event": ["2021-02-03T10:00:00Z"],
                        "repeat": {"boundsPeriod": {"start": "2021-02-01", "end": "2021-03-01"}},
                    },
                }
            },
            {"detail": {"status": "scheduled", "scheduledPeriod": {"start": "2021-04"}}},
            {"detail": {"status": "scheduled", "scheduledString": "every morning"}},
        ],
    }
    rows = [r for r in extract_index(mr).date if r[0] == "activity-date"]
    assert ("activity-date", *second("2021-02-03T10:00:00Z")) in rows
    assert ("activity-date", day("2021-02-01")[0], day("2021-03-01")[1]) in rows
    assert ("activity-date", us("2021-04-01T00:00:00Z"), MAX) in rows
    assert len(rows) == 3
    broken = {**VITALS, "effectiveDateTime": "2024-13-01"}
    assert extract_index(broken).date == []


def test_exists_not_false_token() -> None:
    base = {"resourceType": "Patient", "id": "p"}

    def deceased(extra: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [r for r in extract_index({**base, **extra}).token if r[0] == "deceased"]

    assert deceased({}) == [("deceased", None, "false", None)]
    assert deceased({"deceasedBoolean": False}) == [("deceased", None, "false", None)]
    assert deceased({"deceasedBoolean": True}) == [("deceased", None, "true", None)]
    assert deceased({"deceasedDateTime": "2020-01-01"}) == [("deceased", None, "true", None)]
    rows = extract_index({**base, "deceasedDateTime": "2020-01-01"})
    assert ("death-date", *day("2020-01-01")) in rows.date


def test_telecom_where_system() -> None:
    prac = {
        "resourceType": "Practitioner",
        "telecom": [{"system": "email", "value": "a@b.example"}, {"system": "phone", "value": "+1 555"}],
    }
    tok = extract_index(prac).token
    assert ("email", None, "a@b.example", None) in tok
    assert ("phone", None, "+1 555", None) in tok
    assert ("email", None, "+1 555", None) not in tok
    assert ("phone", None, "a@b.example", None) not in tok


def test_malformed_values_never_raise() -> None:
    junk: dict[str, Any] = {
        "resourceType": "Observation",
        "status": 5,
        "code": "not-a-concept",
        "category": [None, 3, {"coding": "x"}, {"coding": [None, {"system": 1, "code": "c"}]}],
        "subject": {"reference": 12},
        "performer": ["Patient/1", {"reference": ""}],
        "effectivePeriod": {"start": "yesterday"},
        "valueQuantity": [],
        "component": [{"code": {"text": 7}, "valueQuantity": {"value": None}}],
        "meta": {"profile": "not-a-list", "tag": [{"code": None}]},
    }
    rows = extract_index(junk)
    assert ("category", None, "c", None) in rows.token
    check_invariants(junk, rows)
    assert extract_index({"resourceType": "NotAType", "id": "x"}) == IndexRows()
    assert extract_index({"id": "x"}) == IndexRows()


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


def test_search_params_registry() -> None:
    obs = search_params("Observation")
    assert obs["subject"] == SearchParam(
        "subject", "reference", ("Device", "Group", "Location", "Patient"), True
    )
    assert obs["patient"].targets == ("Patient",)
    assert obs["code"] == SearchParam("code", "token", (), True)
    assert obs["code-value-quantity"].type == "composite"
    assert not obs["code-value-quantity"].indexed
    assert search_params("Location")["near"].type == "special"
    assert not search_params("Location")["near"].indexed
    assert search_params("Patient")["_text"].indexed is False
    assert search_params("Nope") == {}
    with pytest.raises(TypeError):
        obs["x"] = obs["code"]  # type: ignore[index]
    assert len(table.RESOURCE_TYPES) == 146
    assert "SubscriptionStatus" not in table.RESOURCE_TYPES


def test_every_priority_param_that_compiles_is_indexed() -> None:
    priority = [
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "HealthcareService",
        "Schedule",
        "Slot",
        "Appointment",
        "Encounter",
        "Questionnaire",
        "QuestionnaireResponse",
        "Communication",
        "Task",
        "MedicationRequest",
        "Observation",
        "DiagnosticReport",
        "DocumentReference",
        "Media",
        "Binary",
        "ImagingStudy",
        "ServiceRequest",
        "CarePlan",
        "CareTeam",
        "Device",
        "Flag",
        "Consent",
        "Coverage",
        "Invoice",
        "AuditEvent",
        "Provenance",
        "Condition",
        "Procedure",
        "Immunization",
        "AllergyIntolerance",
        "Claim",
        "ExplanationOfBenefit",
        "Goal",
        "Medication",
        "MedicationStatement",
    ]
    for rtype in priority:
        params = search_params(rtype)
        assert params, rtype
        for sp in params.values():
            if sp.code in ("_text", "_content", "_query"):
                continue
            assert sp.indexed or sp.type in ("composite", "special"), (rtype, sp)


# ------------------------------------------------------------------------------------------------
# date_bounds / normalize_string
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "lo", "hi"),
    [
        ("2020", us("2020-01-01T00:00:00Z"), us("2021-01-01T00:00:00Z") - 1),
        ("2020-02", us("2020-02-01T00:00:00Z"), us("2020-03-01T00:00:00Z") - 1),
        ("2021-02", us("2021-02-01T00:00:00Z"), us("2021-03-01T00:00:00Z") - 1),
        ("2020-12", us("2020-12-01T00:00:00Z"), us("2021-01-01T00:00:00Z") - 1),
        ("2020-02-29", *day("2020-02-29")),
        ("1969-12-31", *day("1969-12-31")),
        ("1900-03-01", *day("1900-03-01")),
        ("2020-03-04T10:00:00Z", *second("2020-03-04T10:00:00Z")),
        ("2020-03-04T10:00:00+02:00", *second("2020-03-04T08:00:00Z")),
        ("2020-03-04T01:00:00-05:30", *second("2020-03-04T06:30:00Z")),
        ("2020-03-04T10:00:00", *second("2020-03-04T10:00:00Z")),  # no zone: UTC
        ("2020-03-04T10:00", us("2020-03-04T10:00:00Z"), us("2020-03-04T10:01:00Z") - 1),
        ("2020-03-04T10:00:00.5Z", us("2020-03-04T10:00:00.5Z"), us("2020-03-04T10:00:00.6Z") - 1),
        ("2020-03-04T10:00:00.123Z", us("2020-03-04T10:00:00.123Z"), us("2020-03-04T10:00:00.123Z") + 999),
        (
            "2020-03-04T10:00:00.123456+01:00",
            us("2020-03-04T09:00:00.123456Z"),
            us("2020-03-04T09:00:00.123456Z"),
        ),
        (
            "2020-03-04T10:00:00.1234567Z",
            us("2020-03-04T10:00:00.123456Z"),
            us("2020-03-04T10:00:00.123456Z"),
        ),
        ("2016-12-31T23:59:60Z", us("2017-01-01T00:00:00Z"), us("2017-01-01T00:00:00Z") + 999_999),
        ("0001-01-01", *day("0001-01-01")),
        ("9999-12-31T23:59:59Z", *second("9999-12-31T23:59:59Z")),
    ],
)
def test_date_bounds(value: str, lo: int, hi: int) -> None:
    assert date_bounds(value) == (lo, hi)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "20",
        "2020-1",
        "2020-13",
        "2020-00",
        "2021-02-29",
        "2020-04-31",
        "2020-03-04T",
        "2020-03-04T24:00:00Z",
        "2020-03-04T10:60:00Z",
        "2020-03-04T10:00:61Z",
        "2020-03-04T10:00:00+15:00",
        "2020-03-04T10:00:00+14:30",
        "2020-03-04 10:00:00",
        "2020-03-04T10Z",
        "2020-03-04T10:00:00.Z",
        "0000",
        "abcd",
        " 2020",
        "2020-03-04Z",
        "2020-03-04T10:00:00+0200",
    ],
)
def test_date_bounds_rejects_malformed(value: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        date_bounds(value)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Alcántar", "alcantar"),
        ("ALCANTAR", "alcantar"),
        ("  Peter   James\tChalmers ", "peter james chalmers"),
        ("Müller-Lüdenscheidt", "muller-ludenscheidt"),
        ("Straße", "strasse"),
        ("Ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKD compatibility mapping  # noqa: RUF001
        ("Zoë Ångström", "zoe angstrom"),
        ("", ""),
    ],
)
def test_normalize_string(raw: str, norm: str) -> None:
    assert normalize_string(raw) == norm


def test_accented_synthea_name_matches_unaccented_query() -> None:
    path = next(require_fixtures(SYNTHEA).glob("Lourdes_Alc*.json"))
    patient = json.loads(path.read_text(encoding="utf-8"))["entry"][0]["resource"]
    rows = extract_index(patient).string
    assert ("family", "alcantar", "Alcántar") in rows
    query = normalize_string("Alcantar")
    assert any(r[0] == "family" and r[1].startswith(query) for r in rows)
    query = normalize_string("ALCÁN")
    assert any(r[0] == "name" and r[1].startswith(query) for r in rows)


# ------------------------------------------------------------------------------------------------
# Patient compartment
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("res", "expected"),
    [
        (VITALS, {"abc"}),
        (
            {**VITALS, "performer": [{"reference": "Patient/def"}, {"reference": "Practitioner/d"}]},
            {"abc", "def"},
        ),
        ({"resourceType": "Observation", "subject": {"reference": "Group/g"}}, set()),
        ({"resourceType": "Encounter", "subject": {"reference": "Patient/e1"}}, {"e1"}),
        ({"resourceType": "Patient", "id": "me"}, {"me"}),
        ({"resourceType": "Patient"}, set()),
        ({"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "Patient/b"}}]}, {"a", "b"}),
        (
            {"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "RelatedPerson/r"}}]},
            {"a"},
        ),
        (
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": "Patient/p1"},
                "recorder": {"reference": "Patient/p2"},
                "asserter": {"reference": "Practitioner/x"},
            },
            {"p1", "p2"},
        ),
        ({"resourceType": "Practitioner", "id": "d"}, set()),
        ({"resourceType": "Organization", "id": "o", "partOf": {"reference": "Organization/p"}}, set()),
        # Slot is never in a Patient compartment, even pointing at a schedule
        ({"resourceType": "Slot", "schedule": {"reference": "Schedule/s"}}, set()),
        ({"resourceType": "Appointment", "participant": [{"actor": {"reference": "Patient/ap"}}]}, {"ap"}),
        ({"resourceType": "Schedule", "actor": [{"reference": "Patient/sp"}]}, {"sp"}),
        ({"resourceType": "Task", "for": {"reference": "Patient/t"}}, {"t"}),
        ({"resourceType": "Communication", "sender": {"reference": "Patient/cs"}}, {"cs"}),
        ({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/cov"}}, {"cov"}),
        # the Observation's `focus` is not a compartment param
        ({"resourceType": "Observation", "focus": [{"reference": "Patient/f"}]}, set()),
        # absolute references never name a local Patient; relative ones must be used
        (
            {"resourceType": "Observation", "subject": {"reference": "http://other.example/fhir/Patient/z"}},
            set(),
        ),
        ({"resourceType": "Observation", "subject": {"reference": "urn:uuid:abc"}}, set()),
    ],
)
def test_patient_compartment(res: dict[str, Any], expected: set[str]) -> None:
    assert extract_index(res).patients == expected


def test_compartment_examples() -> None:
    assert extract_index(example("Patient-pat1.json")).patients == {"pat1", "pat2"}
    assert extract_index(example("Patient-mom.json")).patients == {"mom"}
    assert extract_index(example("Communication-example.json")).patients == {"example"}
    assert extract_index(example("Consent-consent-example-basic.json")).patients == {"f001"}
    assert extract_index(example("Task-example1.json")).patients == {"example"}
    assert extract_index(example("CarePlan-example.json")).patients == {"example"}
    assert extract_index(example("Slot-1.json")).patients == set()


# ------------------------------------------------------------------------------------------------
# The committed table matches the generator
# ------------------------------------------------------------------------------------------------


@cache
def generator() -> Any:
    """The table generator, imported from tools/ (it is a script, not part of the package)."""
    import importlib.util

    tool = Path(__file__).resolve().parents[2] / "tools" / "gen_search_tables.py"
    spec = importlib.util.spec_from_file_location("gen_search_tables", tool)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


@cache
def structures() -> Any:
    return generator().Structures.load(require_fixtures(FIXTURES / "fhir-r4-definitions"))


def test_generated_table_and_doc_are_current() -> None:
    """``tools/gen_search_tables.py --check``: the committed table/doc match the R4 definitions."""
    require_fixtures(FIXTURES / "fhir-r4-definitions")
    assert generator().main(["--check", "--fixtures", str(FIXTURES)]) == 0


def compiled(base: str, ptype: str, expression: str) -> Any:
    sp = {"code": "x", "type": ptype, "base": [base], "expression": expression}
    return generator().compile_param(structures(), base, sp)


def values(c: Any, resource: dict[str, Any]) -> list[Any]:
    from housecall.fhir import indexing

    out: list[Any] = []
    for _code, steps, _leaf, _restrict in c.branches:
        out.extend(indexing._walk((resource,), steps))
    return out


US_CORE_PATIENT = {
    "resourceType": "Patient",
    "id": "u",
    "extension": [
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"},
                },
                {"url": "text", "valueString": "White"},
            ],
        },
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-genderIdentity",
            "valueCodeableConcept": {"coding": [{"code": "446141000124107"}]},
        },
        {"url": "http://example.org/birth-time", "valueDateTime": "1980-01-01T04:05:00Z"},
    ],
    "name": [{"family": "First"}, {"family": "Second"}],
    "deceasedDateTime": "2020-01-01",
    "telecom": [{"system": "phone", "value": "1"}],
}


def test_compiler_extension_where_url_and_nested_choice() -> None:
    race = compiled(
        "Patient",
        "token",
        "Patient.extension.where(url = 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')"
        ".extension.value.code",
    )
    assert race.indexed, race.reason
    # value[x] of Extension has ~50 types; those with a `code` child remain (Coding.code, Quantity.code,
    # and also Timing.code / UsageContext.code, as FHIRPath would navigate them).
    assert {"code", "CodeableConcept", "Coding"} == {leaf for _c, _s, leaf, _r in race.branches}
    assert values(race, US_CORE_PATIENT) == ["2106-3"]
    gi = compiled(
        "Patient",
        "token",
        "Patient.extension.where(url='http://hl7.org/fhir/us/core/StructureDefinition/us-core-genderIdentity')"
        ".value.coding.code",
    )
    assert values(gi, US_CORE_PATIENT) == ["446141000124107"]


def test_compiler_extension_function_and_json_choice_name() -> None:
    c = compiled("Patient", "date", "Patient.extension('http://example.org/birth-time').value")
    assert c.indexed
    assert {leaf for _c, _s, leaf, _r in c.branches} == {"date", "dateTime", "instant", "Period", "Timing"}
    assert values(c, US_CORE_PATIENT) == ["1980-01-01T04:05:00Z"]
    c = compiled(
        "Condition",
        "date",
        "Condition.extension.where(url = 'http://hl7.org/fhir/StructureDefinition/condition-assertedDate')"
        ".valueDateTime",
    )
    assert c.indexed, c.reason
    cond = {
        "resourceType": "Condition",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
                "valueDateTime": "2019",
            },
            {"url": "http://example.org/other", "valueDateTime": "2018"},
        ],
    }
    assert values(c, cond) == ["2019"]


@pytest.mark.parametrize(
    ("expression", "keys"),
    [
        ("(Observation.effective as dateTime)", [("effectiveDateTime",)]),
        ("Observation.effective.as(Period)", [("effectivePeriod",)]),
        ("(Observation.effective.ofType(instant))", [("effectiveInstant",)]),
        (
            "Observation.effective",
            [("effectiveDateTime",), ("effectivePeriod",), ("effectiveTiming",), ("effectiveInstant",)],
        ),
    ],
)
def test_compiler_type_casts(expression: str, keys: list[tuple[str, ...]]) -> None:
    c = compiled("Observation", "date", expression)
    assert c.indexed
    assert [tuple(k for k, _f, _first in steps) for _c, steps, _l, _r in c.branches] == keys


def test_compiler_first_exists_and_failures() -> None:
    first = compiled("Patient", "string", "Patient.name.first().family")
    assert values(first, US_CORE_PATIENT) == ["First"]
    ex = compiled("Patient", "token", "Patient.telecom.exists()")
    assert ex.indexed
    assert ex.exists[0] == "exists"
    nf = compiled("Patient", "token", "Patient.deceased.exists() and Patient.deceased != false")
    assert nf.exists[0] == "not_false"
    restricted = compiled("Observation", "reference", "Observation.subject.where(resolve() is Group)")
    assert [r for *_x, r in restricted.branches] == ["Group"]
    for expr in (
        "Patient.name.select(family + given)",
        "Observation.value.as(Foo)",
        "Patient.nosuchelement",
        "Observation.subject.resolve().name",
    ):
        c = compiled("Patient" if expr.startswith("Patient") else "Observation", "string", expr)
        assert not c.indexed, expr
        assert c.reason, expr


def test_extract_index_does_not_modify_the_resource() -> None:
    for name in ("Observation-blood-pressure.json", "Patient-example.json", "CarePlan-example.json"):
        res = example(name)
        before = json.dumps(res, sort_keys=True)
        extract_index(res)
        assert json.dumps(res, sort_keys=True) == before


def test_union_aliases_are_stored_as_their_parts() -> None:
    from housecall.fhir.indexing import UNION_ALIASES, index_params, search_params

    for rtype, aliases in UNION_ALIASES.items():
        params = search_params(rtype)
        for combo, parts in aliases.items():
            assert params[combo].indexed
            assert {params[p].type for p in parts} == {params[combo].type}, combo
            assert index_params(rtype, combo) == parts
    rows = extract_index(example(BP))
    assert not [r for r in (*rows.token, *rows.quantity) if r[0].startswith("combo-")]


def test_compartment_patients_agree_with_the_full_extraction() -> None:
    """The access path reads a stored resource's patients with compartment_patients(); it must give
    exactly what extract_index() stored, on every HL7 example and Synthea resource."""
    from housecall.fhir.indexing import compartment_patients

    resources = [json.loads(p.read_bytes()) for p in sorted(require_fixtures(HL7).glob("*.json"))]
    for path in sorted(require_fixtures(SYNTHEA).glob("*.json"))[:5]:
        resources += [e["resource"] for e in json.loads(path.read_bytes())["entry"]]
    with_patients = 0
    for resource in resources:
        expected = extract_index(resource).patients
        assert compartment_patients(resource) == expected, resource.get("resourceType")
        with_patients += bool(expected)
    assert with_patients > 200  # (Synthea refers by urn:uuid, resolved only on load)
