"""FHIR search against a fixed data set, as a table of queries and the ids they must return.

The data set (loaded once per engine into a database of its own):

* five Synthea patient transaction Bundles, POSTed to ``/fhir`` (their ``urn:uuid:`` fullUrls become
  the ids, so they are stable): Luigi Wiegand, Enda Schaefer, Garrett Thompson, Fredrick Kris and
  Lourdes Alcántar;
* every official HL7 R4 example of Patient, Observation, Encounter, Appointment, Slot, Schedule,
  Practitioner, Organization and Location in ``hl7-r4-examples/`` (139 files), each PUT under its own id;
* three hand-made RiskAssessments (below), because no fixture has a ``number`` search parameter.

Every expected id was read off the fixture files by hand (the comment next to each case says where
from); nothing here asks the code under test what the answer should be. The same table runs on
SQLite and on PostgreSQL, so both engines must give the same answers. Each case is also run with
``POST [type]/_search`` (same first page), and every result is collected by following the ``next``
links, so every case also checks paging (no duplicates, nothing lost).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from housecall.audit.trail import sink_for
from tests.conftest import _client
from tests.support import TEST_ORG, drop_database, fixtures_dir, new_database

FIX = fixtures_dir()
BASE = "http://testserver/fhir"

SYNTHEA_FILES = (
    "Luigi_Wiegand_e27d88b0-c5e5-4042-ad49-184f6a900ee3.json",
    "Enda_Schaefer_dd760206-6c4e-4e25-a799-f5c563e489a1.json",
    "Garrett_Thompson_5a72e290-8102-4c8a-84f7-f838387508b2.json",
    "Fredrick_Kris_ec6a5bb6-b412-4bb6-8219-11d66f52ae8b.json",
    "Lourdes_Alcántar_5f258739-cc1d-4109-aa6b-28ad184c6258.json",
)
HL7_TYPES = ("Patient", "Observation", "Encounter", "Appointment", "Slot", "Schedule", "Practitioner",
             "Organization", "Location")  # fmt: skip

# Patient ids: the Patient entry's fullUrl (urn:uuid:...) in each Synthea file.
LUIGI = "1ae0605d-e5b8-4d6d-a96d-c93dcbd57e06"  # male, born 2020-10-20, alive
ENDA = "d070e7dd-4d25-4c52-9fb2-78d232e1cf2c"  # female, 2020-04-09, alive
GARRETT = "3ed2a74a-739a-4f67-8492-c7b94e61515f"  # male, 1972-03-30, deceasedDateTime 1973-07-19
FREDRICK = "d442b673-1185-42f5-bf7c-32eb47bb6b3d"  # male, 1980-12-30, alive
# female, 1940-05-08, deceased 2017-06-18; family names "Alcántar" and (maiden) "Caraballo"
LOURDES = "a9fb0d0f-fb3c-4173-ad19-ec9ba84f4d02"
SYNTHEA_PATIENTS = (LUIGI, ENDA, GARRETT, FREDRICK, LOURDES)
# hl7-r4-examples/Patient-*.json (INDEX.tsv lists 22).
HL7_PATIENTS = (
    "animal", "ch-example", "dicom", "example", "f001", "f201", "genetics-example1", "glossy", "ihe-pcd",
    "infant-fetal", "infant-mom", "infant-twin-1", "infant-twin-2", "mom", "newborn", "pat1", "pat2", "pat3",
    "pat4", "proband", "xcda", "xds",
)  # fmt: skip
ALL_PATIENTS = SYNTHEA_PATIENTS + HL7_PATIENTS

# Luigi's four Encounters (Encounter entries of his file, period.start/end, all +00:00).
LUIGI_ENC_1 = "8d78b15d-6e41-45d9-b369-c11917556707"  # 2020-10-20T19:19:03 .. 19:34:03
LUIGI_ENC_2 = "c7ea660a-af50-4fc8-8403-603a1b366339"  # 2020-11-24T19:19:03 .. 19:49:03
LUIGI_ENC_3 = "b1f62b6c-83d0-46e4-860d-f5b7c51abaf8"  # 2021-01-26T19:19:03 .. 19:49:03
LUIGI_ENC_4 = "d23e7f6f-3570-4591-b34a-7ed1db045b5c"  # 2021-03-30T19:19:03 .. 19:34:03

# Observations of Patient/f001 (Observation-*.json whose subject is Patient/f001).
F001_OBS = ("ekg", "f001", "f002", "f003", "f004", "f005", "unsat")
# Observations of Patient/f201.
F201_OBS = ("f202", "f203", "f204", "f205", "f206")
# Observation-*.json with meta.profile = http://hl7.org/fhir/StructureDefinition/vitalsigns (none in Synthea).
VITALSIGNS_PROFILE = (
    "blood-pressure", "blood-pressure-cancel", "blood-pressure-dar", "bmi", "body-height", "body-length",
    "body-temperature", "head-circumference", "heart-rate", "respiratory-rate", "satO2", "vitals-panel",
)  # fmt: skip
BLOOD_PRESSURE = ("blood-pressure", "blood-pressure-cancel", "blood-pressure-dar")  # LOINC 85354-9
# Synthea Observations with valueQuantity in UCUM mg/dL above 100 (Fredrick's and Lourdes's lipid panels:
# 2093-3 total cholesterol, 2571-8 triglycerides, 18262-6 LDL); no HL7 example uses mg/dL.
MG_DL_OVER_100 = (
    "613ad61f-b512-4848-92bd-adfb3c843174",  # Fredrick 2012-01-10 cholesterol 165.02
    "7dea6fe6-9f80-416b-89c0-157aed985544",  # Fredrick 2012-01-10 triglycerides 121.09
    "8d628b09-bb8d-4eb7-8836-ce4c0470b177",  # Fredrick 2015-01-13 cholesterol 174.66
    "cfd807ff-b340-491f-b390-c66fd55c83f9",  # Fredrick 2015-01-13 triglycerides 136.03
    "70b5c8ee-64a6-48b5-9e5b-08436d91551d",  # Fredrick 2018-01-16 cholesterol 172.66
    "e20e51bb-4981-4581-8ce7-59075d666591",  # Fredrick 2018-01-16 triglycerides 104.13
    "b11cc4b9-2eed-43b3-bfdf-fa13f7dffdfa",  # Lourdes 2009-05-06 cholesterol 193.44
    "44623035-c32c-41ac-916c-305692cc5417",  # Lourdes 2009-05-06 triglycerides 126.57
    "e722435b-632e-4e2f-939e-68b7215f79dd",  # Lourdes 2009-05-06 LDL 103.47
    "165ed4c9-4903-4f13-bb35-9ecdb151546c",  # Lourdes 2013-02-20 cholesterol 189.80
    "87763b88-649f-44e3-b9a7-65d3b7cece8b",  # Lourdes 2013-02-20 triglycerides 110.18
    "5fea5dba-e5ff-4c47-a263-d2fc34bcc812",  # Lourdes 2016-03-09 cholesterol 165.04
    "f12e9d20-30f9-4e14-a00e-eb12d4094391",  # Lourdes 2016-03-09 triglycerides 101.33
)
LOURDES_OBSERVATIONS = 136  # fixtures README, table of the Synthea files

# Hand-made: RiskAssessment.prediction.probability is the only R4 `number` parameter near our data.
RISK_ASSESSMENTS = [
    {"resourceType": "RiskAssessment", "id": rid, "status": "final", "subject": {"reference": subject},
     "prediction": [{"probabilityDecimal": p} for p in probabilities]}
    for rid, subject, probabilities in (
        ("ra-low", "Patient/example", (0.02,)),
        ("ra-mid", "Patient/f001", (0.25,)),
        ("ra-high", "Patient/f201", (0.8, 0.5)),
    )
]  # fmt: skip


# -- the data set ------------------------------------------------------------------------------------


@dataclass
class Loaded:
    client: httpx.AsyncClient
    engine: str
    between: str  # an instant after every Synthea resource was stored and before any HL7 example


def _instant_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def hl7_files() -> list[Path]:
    return sorted(p for t in HL7_TYPES for p in (FIX / "hl7-r4-examples").glob(f"{t}-*.json"))


@pytest.fixture(scope="module")
async def loaded(engine: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loaded]:
    url = new_database(engine, tmp_path_factory.mktemp(f"search-{engine}"))
    try:
        async for client in _client(url):
            for name in SYNTHEA_FILES:
                r = await client.post("/fhir", content=(FIX / "synthea" / name).read_bytes(),
                                      headers={"Content-Type": "application/fhir+json"})  # fmt: skip
                assert r.status_code == 200, r.text[:500]
                assert {e["response"]["status"] for e in r.json()["entry"]} == {"201 Created"}, name
            await asyncio.sleep(0.01)
            between = _instant_now()
            await asyncio.sleep(0.01)
            files = hl7_files()
            assert len(files) == 139  # INDEX.tsv: 22+64+10+3+4+3+14+13+6
            for path in files:
                body = json.loads(path.read_bytes())
                r = await client.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body)
                assert r.status_code == 201, (path.name, r.text[:500])
            for body in RISK_ASSESSMENTS:
                r = await client.put(f"/fhir/RiskAssessment/{body['id']}", json=body)
                assert r.status_code == 201, r.text
            yield Loaded(client, engine, between)
    finally:
        drop_database(url)


# -- running a search --------------------------------------------------------------------------------


@dataclass
class Result:
    matches: list[str] = field(default_factory=list)  # ids of search.mode=match entries, in order
    included: set[str] = field(default_factory=set)  # "Type/id" of search.mode=include entries
    outcomes: int = 0
    total: int | None = None  # Bundle.total of the first page
    pages: int = 0
    first_page: list[str] = field(default_factory=list)  # fullUrls of the first page, in order


def _relative(url: str) -> str:
    assert url.startswith(BASE + "/"), f"paging link {url} is not absolute on the base the client used"
    return url[len("http://testserver") :]


async def run(client: httpx.AsyncClient, query: str, *, max_pages: int = 50) -> Result:
    """GET /fhir/<query> and follow ``next`` to the end, checking every page on the way."""
    out = Result()
    url: str | None = f"/fhir/{query}"
    while url is not None:
        r = await client.get(url)
        assert r.status_code == 200, (query, r.status_code, r.text[:500])
        bundle = r.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "searchset"
        if out.pages == 0:
            out.total = bundle.get("total")
            out.first_page = [e.get("fullUrl", "") for e in bundle.get("entry", [])]
        out.pages += 1
        assert out.pages <= max_pages, f"{query}: more than {max_pages} pages"
        for e in bundle.get("entry", []):
            mode = e["search"]["mode"]
            res = e["resource"]
            if mode == "match":
                assert res["id"] not in out.matches, f"{query}: {res['id']} returned twice"
                assert e["fullUrl"] == f"{BASE}/{res['resourceType']}/{res['id']}"
                out.matches.append(res["id"])
            elif mode == "include":
                out.included.add(f"{res['resourceType']}/{res['id']}")
            else:
                assert mode == "outcome"
                out.outcomes += 1
        links = {link["relation"]: link["url"] for link in bundle.get("link", [])}
        url = _relative(links["next"]) if "next" in links else None
    return out


# -- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    query: str
    expected: tuple[str, ...]  # ids of the matches
    ordered: bool = False  # compare as a sequence (queries with _sort)
    included: tuple[str, ...] = ()  # "Type/id" of the _include/_revinclude entries
    # Where the expectation comes from is in the comment above each case.


def case(query: str, *expected: str, ordered: bool = False, included: tuple[str, ...] = ()) -> Any:
    return pytest.param(Case(query, expected, ordered, included), id=query)


def without(everything: tuple[str, ...], *removed: str) -> tuple[str, ...]:
    return tuple(x for x in everything if x not in removed)


# fmt: off
CASES = [
    # ---- token ------------------------------------------------------------------------------------
    # system|code: Observation-blood-pressure{,-cancel,-dar}.json code.coding[0] = loinc 85354-9
    # (Synthea's blood-pressure panel is 55284-4).
    case("Observation?code=http://loinc.org|85354-9", *BLOOD_PRESSURE),
    # code alone: Observation-f001.json and Observation-unsat.json are LOINC 15074-8 (glucose).
    case("Observation?code=15074-8", "f001", "unsat"),
    # a later coding of a CodeableConcept: Observation-example.json's third coding is SNOMED 27113001.
    case("Observation?code=http://snomed.info/sct|27113001", "example"),
    # wrong system for the code: nothing.
    case("Observation?code=http://snomed.info/sct|85354-9"),
    # OR within one parameter: Observation-body-height.json (8302-2), -body-length.json (8302-2 and 8306-3).
    case("Observation?subject=Patient/example&code=http://loinc.org|8302-2,http://loinc.org|8306-3",
         "body-height", "body-length"),
    # |code = coding without a system: Appointment-2docs/-example.json serviceType {code: "52"} has none;
    # Slot-example.json serviceType {code: "57"}.
    case("Appointment?service-type=|52", "2docs", "example"),
    case("Appointment?service-type=http://example.org/service-type|52"),
    case("Slot?service-type=|57", "example"),
    # :not - status is not final: blood-pressure-cancel is "cancelled".
    case("Observation?code=http://loinc.org|85354-9&status:not=final", "blood-pressure-cancel"),
    # Patient/example's Observations that are not final: -cancel (cancelled), TPMT haplotypes (unknown).
    case("Observation?subject=Patient/example&status:not=final",
         "blood-pressure-cancel", "example-TPMT-haplotype-one", "example-TPMT-haplotype-two"),
    # :text - prefix of CodeableConcept.text, case-insensitive: the three HL7 blood pressures have
    # text "Blood pressure systolic & diastolic"; Synthea's panel text is only "Blood Pressure".
    case("Observation?code:text=BLOOD%20pressure%20systolic", *BLOOD_PRESSURE),
    # identifier system|value and value alone: Patient-example.json has urn:oid:1.2.36.146.595.217.0.1|12345,
    # Patient-xcda.json has urn:oid:2.16.840.1.113883.19.5|12345.
    case("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", "example"),
    case("Patient?identifier=12345", "example", "xcda"),
    # Synthea SSN identifier of Lourdes.
    case("Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-67-7605", LOURDES),
    # Encounter-f001.json identifier.
    case("Encounter?identifier=http://www.amc.nl/zorgportal/identifiers/visits|v1451", "f001"),
    # code token: Patient-pat2.json is the only gender "other".
    case("Patient?gender=other", "pat2"),
    # Coding-typed token: Encounter.class; Encounter-home.json is HH; -emerg and -example are IMP.
    case("Encounter?class=HH", "home"),
    case("Encounter?subject=Patient/example&class=http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP",
         "emerg", "example"),
    # deceased = exists(deceased) and not false: Garrett and Lourdes (deceasedDateTime), pat3
    # (deceasedDateTime), pat4 (deceasedBoolean true); ch-example/example/f001/f201/proband say false.
    case("Patient?deceased=true", GARRETT, LOURDES, "pat3", "pat4"),
    case("Patient?deceased=false", *without(ALL_PATIENTS, GARRETT, LOURDES, "pat3", "pat4")),
    # ContactPoint token: Patient-example.json telecom phone "(03) 5555 6473".
    case("Patient?phone=(03)%205555%206473", "example"),
    # meta.tag: every Synthea Patient carries https://smarthealthit.org/tags|synthea-5-2019.
    case("Patient?_tag=https://smarthealthit.org/tags|synthea-5-2019", *SYNTHEA_PATIENTS),
    # category: Patient/example's Observations with category vital-signs.
    case("Observation?subject=Patient/example&category=vital-signs",
         "blood-pressure-cancel", "blood-pressure-dar", "blood-pressure", "bmi-using-related", "bmi",
         "body-height", "body-length", "body-temperature", "example", "head-circumference", "heart-rate",
         "mbp", "respiratory-rate", "satO2", "vitals-panel"),
    # ---- string -----------------------------------------------------------------------------------
    # default: case- and accent-insensitive prefix of any name part. Lourdes's family is "Alcántar".
    case("Patient?name=alcantar", LOURDES),
    case("Patient?name=Alc%C3%A1ntar", LOURDES),
    case("Patient?family=ALCAN", LOURDES),
    case("Patient?name=caraballo", LOURDES),  # her maiden name (second HumanName)
    # :exact is case- and accent-sensitive, whole value.
    case("Patient?name:exact=Alc%C3%A1ntar", LOURDES),
    case("Patient?name:exact=Alcantar"),
    case("Patient?family:exact=Chalmers", "example"),
    case("Patient?family:exact=chalmers"),
    case("Patient?family:exact=Chalm"),
    # :contains anywhere in the value: "Everywoman" (genetics-example1, mom), "Levin" (glossy, xcda).
    case("Patient?family:contains=EV", "genetics-example1", "glossy", "mom", "xcda"),
    case("Patient?name:contains=lcant", LOURDES),
    # prefix only at the start: "van de Heuvel" (f001) starts with "van", nothing starts with "euvel".
    case("Patient?family=van", "f001"),
    case("Patient?family=heuvel"),
    # given, and two occurrences ANDed: Patient-example.json "Peter James".
    case("Patient?given=peter", "example"),
    case("Patient?given=Peter&given=James", "example"),
    case("Patient?given=Peter&given=Henry"),
    # address-city: f001 and f201 live in Amsterdam.
    case("Patient?address-city=amsterdam", "f001", "f201"),
    # ---- reference --------------------------------------------------------------------------------
    case("Observation?subject=Patient/f001", *F001_OBS),
    case("Observation?subject=f001", *F001_OBS),  # bare id
    case("Observation?subject:Patient=f001", *F001_OBS),  # :Type modifier
    case("Observation?patient=f001", *F001_OBS),
    case("Observation?subject=http://testserver/fhir/Patient/f001", *F001_OBS),  # absolute, on our base
    case("Observation?subject=Patient/f001,Patient/f201", *F001_OBS, *F201_OBS),
    case("Observation?subject:Group=herd1", "herd1"),  # Observation-herd1.json subject Group/herd1
    case("Observation?subject:Patient=herd1"),
    case(f"Encounter?subject=Patient/{LUIGI}", LUIGI_ENC_1, LUIGI_ENC_2, LUIGI_ENC_3, LUIGI_ENC_4),
    # performer Practitioner/f005: f001-f005, ekg, unsat and vp-oyster.
    case("Observation?performer=Practitioner/f005", *F001_OBS, "vp-oyster"),
    # Appointment participants and slot: all three list Patient/example; only examplereq has a slot.
    case("Appointment?actor=Patient/example", "2docs", "example", "examplereq"),
    case("Appointment?slot=Slot/example", "examplereq"),
    # Schedule-exampleloc1/2.json actor Practitioner/1.
    case("Schedule?actor=Practitioner/1", "exampleloc1", "exampleloc2"),
    # ---- chaining -----------------------------------------------------------------------------------
    # f001 is "Pieter van de Heuvel"; example is "Peter James Chalmers".
    case("Observation?subject:Patient.name=pieter", *F001_OBS),
    case("Observation?subject.name=chalmers&code=85354-9", *BLOOD_PRESSURE),
    case("Observation?subject.identifier=urn:oid:2.16.840.1.113883.2.4.6.3|738472983", *F001_OBS),
    # Encounter-f001/2/3.json have subject Patient/f001.
    case("Encounter?subject.birthdate=1944-11-17", "f001", "f002", "f003"),
    # two levels: Patient/f001's managingOrganization is Organization/f001 "Burgers University Medical
    # Center".
    case("Observation?subject.organization.name=Burgers", *F001_OBS),
    # chained into a reference parameter: the Slots of Schedule/example, whose actor is Location/1.
    case("Slot?schedule.actor=Location/1", "1", "2", "3", "example"),
    # a modifier on the chained parameter
    case("Observation?subject:Patient.name:exact=Chalmers&code=85354-9", *BLOOD_PRESSURE),
    case("Observation?subject.name:exact=chalmers&code=85354-9"),
    case("Observation?subject.organization:Organization.name=Burgers", *F001_OBS),
    # ---- _has (reverse chaining) -------------------------------------------------------------------
    case("Patient?_has:Observation:subject:code=85354-9", "example"),
    case("Patient?_has:Observation:patient:code=http://loinc.org|15074-8", "f001"),
    case("Patient?_has:Encounter:subject:class=HH", "example"),
    case("Schedule?_has:Slot:schedule:status=free", "example"),  # Slot-example.json is the free one
    # ---- date: Patient.birthDate -------------------------------------------------------------------
    # birthDates: animal 2010-03-23, ch-example 1974-12-25, example 1974-12-25, f001 1944-11-17,
    # f201 1960-03-13, genetics-example1 1973-05-31, glossy 1932-09-24, infant-mom 1995-10-12,
    # infant-twin-1/-2 2017-05-15, mom 1973-05-31, newborn 2017-09-05, pat3 1982-01-23, pat4 1982-08-02,
    # proband 1966-04-04, xcda 1932-09-24, xds 1956-05-27; Synthea: Luigi 2020-10-20, Enda 2020-04-09,
    # Garrett 1972-03-30, Fredrick 1980-12-30, Lourdes 1940-05-08. None: dicom, ihe-pcd, infant-fetal,
    # pat1, pat2.
    case("Patient?birthdate=1974-12-25", "ch-example", "example"),
    case("Patient?birthdate=eq1974-12-25", "ch-example", "example"),
    case("Patient?birthdate=1974", "ch-example", "example"),  # partial: the year
    case("Patient?birthdate=1944-11", "f001"),  # partial: the month
    case("Patient?birthdate=lt1940", "glossy", "xcda"),
    case("Patient?birthdate=le1944-11-17", "glossy", "xcda", LOURDES, "f001"),
    case("Patient?birthdate=gt2017-05-15", "newborn", ENDA, LUIGI),
    case("Patient?birthdate=ge2017-05-15", "infant-twin-1", "infant-twin-2", "newborn", ENDA, LUIGI),
    case("Patient?birthdate=ge1970&birthdate=lt1983&birthdate=ne1974-12-25",
         "genetics-example1", "mom", GARRETT, FREDRICK, "pat3", "pat4"),
    case("Patient?birthdate=sa2017", ENDA, LUIGI),  # starts after the end of 2017
    case("Patient?birthdate=eb1940", "glossy", "xcda"),  # ends before 1940
    # ap: within 10% of the distance to now, about a year around 2017-05-15 in 2026 (and under two years
    # until 2036), so the twins and newborn (2017-09-05) and nobody else (2010, 2020).
    case("Patient?birthdate=ap2017-05-15", "infant-twin-1", "infant-twin-2", "newborn"),
    # ---- date: periods (Encounter.period) and time zones ------------------------------------------
    case(f"Encounter?subject=Patient/{LUIGI}&date=2020-11-24", LUIGI_ENC_2),
    case(f"Encounter?subject=Patient/{LUIGI}&date=2020-11", LUIGI_ENC_2),
    case(f"Encounter?subject=Patient/{LUIGI}&date=2021", LUIGI_ENC_3, LUIGI_ENC_4),
    case(f"Encounter?subject=Patient/{LUIGI}&date=ne2020-11-24", LUIGI_ENC_1, LUIGI_ENC_3, LUIGI_ENC_4),
    case(f"Encounter?subject=Patient/{LUIGI}&date=lt2020-11-24", LUIGI_ENC_1),
    case(f"Encounter?subject=Patient/{LUIGI}&date=le2020-11-24", LUIGI_ENC_1, LUIGI_ENC_2),
    case(f"Encounter?subject=Patient/{LUIGI}&date=gt2021-01-26", LUIGI_ENC_4),
    case(f"Encounter?subject=Patient/{LUIGI}&date=ge2021-01-26", LUIGI_ENC_3, LUIGI_ENC_4),
    case(f"Encounter?subject=Patient/{LUIGI}&date=sa2020-11-24", LUIGI_ENC_3, LUIGI_ENC_4),
    case(f"Encounter?subject=Patient/{LUIGI}&date=eb2021-01-26", LUIGI_ENC_1, LUIGI_ENC_2),
    case(f"Encounter?subject=Patient/{LUIGI}&date=ge2020-11-24T19:30:00Z&date=le2020-11-24T19:40:00Z",
         LUIGI_ENC_2),
    # Encounter-f203.json period 2013-03-11 .. 2013-03-20: inside March, not inside one day of it.
    case("Encounter?subject=Patient/f201&date=2013-03", "f203"),
    case("Encounter?subject=Patient/f201&date=2013-03-15"),
    case("Encounter?subject=Patient/f201&date=ge2013-03-15&date=le2013-03-15", "f203"),
    # Encounter-emerg.json starts 2017-02-01T07:15+10:00 (2017-01-31T21:15Z) and has no end;
    # Encounter-home.json is 2015-01-17T16:00..16:30+10:00 (06:00..06:30Z); Encounter-example has no period.
    case("Encounter?subject=Patient/example&date=lt2017-02-01", "emerg", "home"),
    case("Encounter?subject=Patient/example&date=lt2017-01-31T21:15:00Z", "home"),
    case("Encounter?subject=Patient/example&date=ge2030", "emerg"),  # open end
    case("Encounter?subject=Patient/example&date=2015-01-17", "home"),
    case("Encounter?subject=Patient/example&date=2017-02-01"),
    # Observation.effective[x]: f001 has a start only; f002-f004 and unsat end 2013-04-05, f005 is
    # 2013-04-05 10:30+01:00; ekg is 2015-02-19. Only f001 (open) and ekg end after 2013-04-05.
    case("Observation?subject=Patient/f001&date=2013-04", "f002", "f003", "f004", "f005", "unsat"),
    case("Observation?subject=Patient/f001&date=gt2013-04-05", "f001", "ekg"),
    case("Observation?date=2012-09-17", *BLOOD_PRESSURE),  # no Synthea Observation in 2012-09
    # Appointment.start and Slot.start (Appointment-example 2013-12-10T09:00Z; Slots 1: 09:00,
    # example: 09:15, 3: 09:30, 2: 09:45 on 2013-12-25, all Z).
    case("Appointment?date=2013-12-10", "example"),
    case("Slot?start=ge2013-12-25T09:30:00Z", "2", "3"),
    case("Slot?start=lt2013-12-25T09:15:00Z", "1"),
    # ---- quantity -----------------------------------------------------------------------------------
    case("Observation?value-quantity=gt100|http://unitsofmeasure.org|mg/dL", *MG_DL_OVER_100),
    # without units; 6.3 means [6.25, 6.35): Observation-f001.json 6.3 mmol/l (f003 is 6.2).
    case("Observation?value-quantity=6.3", "f001"),
    case("Observation?value-quantity=6.3|http://unitsofmeasure.org|mmol/L", "f001"),
    case("Observation?value-quantity=6.3|http://unitsofmeasure.org|kPa"),
    # ||code: Observation-example.json 185 [lb_av] (unit "lbs").
    case("Observation?value-quantity=185||[lb_av]", "example"),
    case("Observation?value-quantity=185||lbs", "example"),
    # components: systolic 107 mm[Hg] in blood-pressure and -dar (cancel has no values).
    case("Observation?subject=Patient/example&component-value-quantity=gt100|http://unitsofmeasure.org|mm[Hg]",
         "blood-pressure", "blood-pressure-dar"),
    # Encounter.length: f001 and f002 140 min, f003 90 min, f202 56 min.
    case("Encounter?length=140", "f001", "f002"),
    case("Encounter?length=gt100|http://unitsofmeasure.org|min", "f001", "f002"),
    case("Encounter?length=lt100", "f003", "f202"),
    case("Encounter?length=ne140", "f003", "f202"),
    # ---- number (the hand-made RiskAssessments: 0.02, 0.25, 0.8 and 0.5) ---------------------------
    case("RiskAssessment?probability=0.25", "ra-mid"),
    case("RiskAssessment?probability=0.3", "ra-mid"),  # 0.3 means [0.25, 0.35)
    case("RiskAssessment?probability=0.2"),  # [0.15, 0.25): 0.25 is outside
    case("RiskAssessment?probability=0.250", "ra-mid"),
    case("RiskAssessment?probability=gt0.5", "ra-high"),
    case("RiskAssessment?probability=ge0.5", "ra-high"),
    case("RiskAssessment?probability=lt0.25", "ra-low"),
    case("RiskAssessment?probability=le0.25", "ra-low", "ra-mid"),
    case("RiskAssessment?probability=ne0.25", "ra-low", "ra-high"),
    case("RiskAssessment?probability=ap0.8", "ra-high"),
    # ---- uri ----------------------------------------------------------------------------------------
    case("Observation?_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns", *VITALSIGNS_PROFILE),
    case("Observation?_profile=http://hl7.org/fhir/StructureDefinition/vital"),
    case("Observation?_profile:below=http://hl7.org/fhir/StructureDefinition/vital", *VITALSIGNS_PROFILE),
    # ---- :missing -------------------------------------------------------------------------------------
    case("Patient?birthdate:missing=true", "dicom", "ihe-pcd", "infant-fetal", "pat1", "pat2"),
    case("Patient?birthdate:missing=false&gender=female",
         "animal", "genetics-example1", "infant-mom", "infant-twin-1", "mom", "pat4", "proband", ENDA,
         LOURDES),
    case("Patient?gender:missing=true", "ihe-pcd"),
    # decimal and vp-oyster have no subject; herd1's subject is a Group, the apgar scores' a contained
    # Patient.
    case("Observation?subject:missing=true", "decimal", "vp-oyster"),
    case("Observation?patient:missing=true", "decimal", "herd1", "vp-oyster"),
    # ---- _id ------------------------------------------------------------------------------------------
    case("Patient?_id=example,f001", "example", "f001"),
    case("Observation?_id=f001,f002&value-quantity=gt10", "f002"),  # f002 is 12.6 mmol/l
    case("Patient?_id=does-not-exist"),
    # ---- _sort ----------------------------------------------------------------------------------------
    # birthDate descending, ties by id, missing birthDates last (the list above).
    case("Patient?_sort=-birthdate,_id",
         LUIGI, ENDA, "newborn", "infant-twin-1", "infant-twin-2", "animal", "infant-mom", "pat4", "pat3",
         FREDRICK, "ch-example", "example", "genetics-example1", "mom", GARRETT, "proband", "f201", "xds",
         "f001", LOURDES, "glossy", "xcda", "dicom", "ihe-pcd", "infant-fetal", "pat1", "pat2",
         ordered=True),
    # family ascending (a Patient's first family name in sort order), then id; no family name last.
    case("Patient?gender=female&_sort=family,_id",
         LOURDES, "genetics-example1", "mom", "pat4", "infant-mom", ENDA, "infant-twin-1", "animal",
         "proband", ordered=True),
    # effective ascending by start; descending by end (f001 has no end, so it is "latest").
    case("Observation?subject=Patient/f001&_sort=date,_id",
         "f001", "unsat", "f002", "f003", "f004", "f005", "ekg", ordered=True),
    case("Observation?subject=Patient/f001&_sort=-date,_id",
         "f001", "ekg", "f002", "f003", "f004", "f005", "unsat", ordered=True),
    case(f"Encounter?subject=Patient/{LUIGI}&_sort=-date",
         LUIGI_ENC_4, LUIGI_ENC_3, LUIGI_ENC_2, LUIGI_ENC_1, ordered=True),
    case("Slot?_sort=status,-start", "1", "2", "3", "example", ordered=True),  # busy < busy-tentative < ...
    # all four Slots have serviceCategory 17, so the second key decides.
    case("Slot?_sort=service-category,-start", "2", "3", "example", "1", ordered=True),
    case("Encounter?subject=Patient/f001&_sort=-length,-_id", "f002", "f001", "f003", ordered=True),
    # PUT in file-name order: Slot-1, -2, -3, -example.
    case("Slot?_sort=-_lastUpdated", "example", "3", "2", "1", ordered=True),
    # ---- _include / _revinclude ---------------------------------------------------------------------
    case("Observation?code=http://loinc.org|85354-9&_include=Observation:subject&_include=Observation:performer",
         *BLOOD_PRESSURE, included=("Patient/example", "Practitioner/example")),
    case("Observation?code=http://loinc.org|85354-9&_include=Observation:subject:Practitioner",
         *BLOOD_PRESSURE),
    case("Encounter?_id=f001&_include=Encounter:participant", "f001", included=("Practitioner/f002",)),
    case("Observation?_id=f001&_include=Observation:subject&_include:iterate=Patient:organization",
         "f001", included=("Patient/f001", "Organization/f001")),
    case("Slot?_id=1&_include=Slot:schedule&_include:iterate=Schedule:actor",
         "1", included=("Schedule/example", "Location/1")),
    case("Patient?_id=f001&_revinclude=Observation:subject",
         "f001", included=tuple(f"Observation/{i}" for i in F001_OBS)),
    case("Patient?_id=f201&_revinclude=Encounter:subject&_revinclude=Observation:subject",
         "f201", included=("Encounter/f201", "Encounter/f202", "Encounter/f203",
                           *(f"Observation/{i}" for i in F201_OBS))),
    case("Schedule?_id=example&_revinclude=Slot:schedule&_revinclude:iterate=Appointment:slot",
         "example",
         included=("Slot/1", "Slot/2", "Slot/3", "Slot/example", "Appointment/examplereq")),
    # ---- _lastUpdated is checked in test_last_updated (it needs the load time) --------------------------
]
# fmt: on


@pytest.mark.parametrize("c", CASES)
async def test_search_table(loaded: Loaded, c: Case) -> None:
    got = await run(loaded.client, c.query)
    if c.ordered:
        assert got.matches == list(c.expected)
    else:
        assert sorted(got.matches) == sorted(c.expected)
        assert len(got.matches) == len(set(c.expected))
    assert got.included == set(c.included)
    assert got.outcomes == 0, "a parameter of the query was ignored"
    # The first page of POST [type]/_search with the parameters as a form is the same.
    res_type, _, query = c.query.partition("?")
    r = await loaded.client.post(f"/fhir/{res_type}/_search", content=query,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 200, r.text[:500]
    assert [e.get("fullUrl", "") for e in r.json().get("entry", [])] == got.first_page


# -- _lastUpdated, paging, totals, _summary, _elements -------------------------------------------------


async def test_last_updated(loaded: Loaded) -> None:
    # Synthea was loaded before `between`, the HL7 examples after it.
    before = await run(loaded.client, f"Patient?_lastUpdated=lt{loaded.between}")
    after = await run(loaded.client, f"Patient?_lastUpdated=ge{loaded.between}")
    assert sorted(before.matches) == sorted(SYNTHEA_PATIENTS)
    assert sorted(after.matches) == sorted(HL7_PATIENTS)
    both = await run(loaded.client, f"Appointment?_lastUpdated=gt{loaded.between}&_lastUpdated=lt2999")
    assert sorted(both.matches) == ["2docs", "example", "examplereq"]
    # Desc by lastUpdated: HL7 Patients (loaded later, in file-name order) come first, reversed.
    r = (await loaded.client.get("/fhir/Patient?_sort=-_lastUpdated&_count=3")).json()
    assert [e["resource"]["id"] for e in r["entry"]] == ["xds", "xcda", "proband"]


@pytest.mark.parametrize(
    ("query", "count", "expected"),
    [
        (f"Observation?subject=Patient/{LOURDES}", 25, LOURDES_OBSERVATIONS),  # 6 pages
        ("Patient?_sort=birthdate,_id", 4, len(ALL_PATIENTS)),  # sorted, 7 pages
        ("Patient", 5, len(ALL_PATIENTS)),  # default order
        ("Observation?code=http://loinc.org|85354-9&_include=Observation:subject", 1, 3),
    ],
)
async def test_paging_union_equals_unpaged(loaded: Loaded, query: str, count: int, expected: int) -> None:
    sep = "&" if "?" in query else "?"
    paged = await run(loaded.client, f"{query}{sep}_count={count}")
    whole = await run(loaded.client, f"{query}{sep}_count=1000")
    assert whole.pages == 1
    assert len(whole.matches) == expected
    assert paged.pages == -(-expected // count)  # ceil
    assert sorted(paged.matches) == sorted(whole.matches)  # no duplicates: run() asserts that per id
    if "_sort" in query:
        assert paged.matches == whole.matches
    assert paged.included == whole.included


async def test_total(loaded: Loaded) -> None:
    c = loaded.client
    # More than one page: no total unless asked for (it costs a count query).
    r = (await c.get("/fhir/Patient?_count=5")).json()
    assert "total" not in r
    assert any(link["relation"] == "next" for link in r["link"])
    r = (await c.get("/fhir/Patient?_count=5&_total=accurate")).json()
    assert r["total"] == len(ALL_PATIENTS)
    assert len(r["entry"]) == 5
    # The last page knows its total without a count query.
    r = (await c.get("/fhir/Patient?_count=5&_offset=25")).json()
    assert r["total"] == 27
    assert len(r["entry"]) == 2
    # _summary=count and _count=0: the total, no entries.
    r = (await c.get("/fhir/Observation?subject=Patient/f001&_summary=count")).json()
    assert r["total"] == len(F001_OBS)
    assert "entry" not in r
    r = (await c.get(f"/fhir/Observation?subject=Patient/{LOURDES}&_count=0")).json()
    assert r["total"] == LOURDES_OBSERVATIONS
    assert "entry" not in r


async def test_elements_and_summary(loaded: Loaded) -> None:
    c = loaded.client
    r = (await c.get("/fhir/Patient?_id=example&_elements=birthDate,gender")).json()
    (entry,) = r["entry"]
    res = entry["resource"]
    # Patient-example carries an extension on birthDate (`_birthDate`); it is part of that element.
    assert set(res) == {"resourceType", "id", "meta", "birthDate", "_birthDate", "gender"}
    assert res["birthDate"] == "1974-12-25"
    assert res["gender"] == "male"
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in (
        res["meta"]["tag"]
    )
    # Mandatory elements stay (search.html#elements: "Servers SHOULD always return mandatory elements"),
    # or the resource is not valid R4: Observation.status and .code are 1..1.
    r = (await c.get("/fhir/Observation?_id=f001&_elements=subject")).json()
    res = r["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "subject", "status", "code"}
    # _summary=text: "only the text, id, meta, and only top-level mandatory elements".
    r = (await c.get("/fhir/Observation?_id=f001&_summary=text")).json()
    res = r["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "text", "status", "code"}
    # _summary=data drops the narrative only.
    r = (await c.get("/fhir/Observation?_id=f001&_summary=data")).json()
    res = r["entry"][0]["resource"]
    assert "text" not in res
    assert res["valueQuantity"]["value"] == 6.3


async def test_unknown_and_unsupported_parameters(loaded: Loaded) -> None:
    c = loaded.client
    # Lenient (default): ignored, reported in an OperationOutcome entry, and left out of the links.
    lenient = await run(c, "Patient?gender=other&not-a-param=1")
    assert lenient.matches == ["pat2"]
    assert lenient.outcomes == 1
    r = (await c.get("/fhir/Patient?gender=other&not-a-param=1")).json()
    assert all("not-a-param" not in link["url"] for link in r["link"])
    # Strict: 400 with an OperationOutcome; the same for a composite parameter (not indexed).
    for query in ("Patient?not-a-param=1", "Observation?code-value-quantity=http://loinc.org|8480-6$gt100"):
        r = await c.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
        assert r.status_code == 400
        assert r.json()["resourceType"] == "OperationOutcome"
    # Malformed values are errors in both modes.
    for query in ("Patient?birthdate=12/25/1974", "Patient?_count=-1", "Patient?_sort=not-a-param",
                  "RiskAssessment?probability=high", "Patient?gender:missing=maybe"):  # fmt: skip
        r = await c.get(f"/fhir/{query}")
        assert r.status_code == 400, query
        assert r.json()["resourceType"] == "OperationOutcome"


# -- statement counts on the hot paths -------------------------------------------------------------------


# Every API request also looks up its access token (1 statement; counted here with the process's
# memory of checked tokens switched off, so the figure does not depend on when another test's
# change was notified) and stores its audit events: a read's in an INSERT of its own (on SQLite
# with BEGIN IMMEDIATE and COMMIT), a write's inside the write (PostgreSQL: in the same statement;
# SQLite: one more INSERT before the COMMIT). The counts below are those of the interaction itself.
PER_READ = {"postgresql": 2, "sqlite": 4}
PER_WRITE = {"postgresql": 1, "sqlite": 2}


async def _statements(c: httpx.AsyncClient, method: str, url: str, **kw: Any) -> tuple[httpx.Response, int]:
    state = c._transport.app.state  # type: ignore[attr-defined]
    sink = sink_for(state)
    await sink.close()  # earlier requests' audit events are stored before counting starts
    live, state.live_tokens = getattr(state, "live_tokens", None), None
    try:
        before = state.db.counter.statements
        r = await c.request(method, url, **kw)
        await sink.close()  # a successful read's event is stored just after the answer: count it
    finally:
        state.live_tokens = live
    per = PER_READ if method == "GET" else PER_WRITE
    return r, state.db.counter.statements - before - per[state.db.dialect]


async def _count(c: httpx.AsyncClient, url: str) -> int:
    r, n = await _statements(c, "GET", url)
    assert r.status_code == 200, r.text[:300]
    return n


async def test_statement_counts(loaded: Loaded) -> None:
    c = loaded.client
    # A read is the one primary-key lookup.
    assert await _count(c, "/fhir/Patient/example") == 1
    # Search by subject + code: one SELECT with both filters as sub-selects; the total of a single page
    # comes for free (offset + rows), so no count(*) unless _total=accurate asks for it.
    q = "/fhir/Observation?subject=Patient/f001&code=http://loinc.org|15074-8"
    assert await _count(c, q) == 1
    assert await _count(c, q + "&_total=accurate") == 2
    assert await _count(c, f"/fhir/Observation?subject=Patient/{LOURDES}&_count=10") == 1
    # _include: + one reference lookup per _include + one fetch per target type found, whatever the
    # page size (no query per match). All vital-signs Observations have a Patient subject.
    for n in (1, 5, 20, 100):
        one = f"/fhir/Observation?category=vital-signs&_count={n}&_include=Observation:subject"
        assert await _count(c, one) == 3
        assert await _count(c, f"/fhir/Patient?_count={n}&_revinclude=Observation:subject") == 3
        two = f"/fhir/Patient?_count={n}&_revinclude=Observation:subject&_revinclude=Encounter:subject"
        assert await _count(c, two) == 5


async def test_create_statement_count(loaded: Loaded) -> None:
    """Measured numbers, asserted exactly so that any change is noticed (update them with the reason).

    PostgreSQL: one statement (a single INSERT ... CTE writes the resource, every index table and
    the compartment; a create writes no history row, its version moves there when replaced).
    SQLite: BEGIN IMMEDIATE + resource + one executemany per index table that has rows
    + compartment + COMMIT. A name-only Patient has string rows (name) and token rows (deceased=false):
    6. Observation-blood-pressure has token, reference, date, quantity and uri (_profile) rows: 9.
    """
    c = loaded.client
    patient = {"resourceType": "Patient", "name": [{"family": "Counted"}]}
    bp = json.loads((FIX / "hl7-r4-examples" / "Observation-blood-pressure.json").read_bytes())
    del bp["id"]
    expected = {"postgresql": (1, 1), "sqlite": (6, 9)}[loaded.engine]
    r1, n1 = await _statements(c, "POST", "/fhir/Patient", json=patient)
    r2, n2 = await _statements(c, "POST", "/fhir/Observation", json=bp)
    assert (r1.status_code, r2.status_code) == (201, 201)
    # Leave the data set as it was for the other tests of the module.
    assert (await c.delete(f"/fhir/Patient/{r1.json()['id']}")).status_code == 204
    assert (await c.delete(f"/fhir/Observation/{r2.json()['id']}")).status_code == 204
    assert (n1, n2) == expected


def test_queries_are_well_formed() -> None:
    """Guard on the table itself: every query names a type and its parameters parse as a query string."""
    for p in CASES:
        c: Case = p.values[0]
        res_type, _, query = c.query.partition("?")
        assert res_type[:1].isupper()
        assert "/" not in res_type
        assert parse_qsl(query, keep_blank_values=True) or not query
        assert not urlsplit(c.query).fragment


async def test_the_patients_a_search_reads_with_its_matches_are_those_of_their_content(
    loaded: Loaded,
) -> None:
    """Searches read each match's compartment rows instead of parsing it again for the audit trail
    and the access check; over every loaded resource of these types they must say the same."""
    from housecall.fhir.indexing import compartment_patients
    from housecall.fhir.search import parse_search, run_search

    state = loaded.client._transport.app.state  # type: ignore[attr-defined]
    seen = 0
    async with state.db.reader() as conn:
        for res_type in ("Patient", "Observation", "Encounter", "Claim", "Organization", "Practitioner"):
            req = parse_search(
                res_type, [("_count", "1000")], strict=True, default_count=1000, max_count=1000
            )
            for stored in (await run_search(conn, req, org_id=TEST_ORG)).matches:
                assert stored.patients == compartment_patients(json.loads(stored.content)), stored.res_id
                seen += 1
    assert seen > 500
