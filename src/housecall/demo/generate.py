"""The Housecall demo organization, generated as one FHIR R4 transaction Bundle.

Contract
--------
``demo_bundle(seed, today)`` returns a ``Bundle`` of ``type: "transaction"`` in
which every entry is ``PUT <Type>/<id>``.  The output is a pure function of
``seed`` and ``today``: no clock reads (other than the ``today`` default), no
files, no network.

* Ids are ``<prefix>-<kind>-<key>`` where the prefix is derived from the seed
  (``demo2026-...`` for the default seed).  The *set* of ids depends only on the
  seed, never on ``today``: loading the bundle again -- even on another day --
  updates the same resources instead of adding new ones.  Time-relative data
  (slots, appointments, vitals) simply moves forward with ``today``.
* References between entries are relative (``"Patient/<id>"``) and all resolve
  inside the bundle.  Display-only references (a licence ``issuer``) carry no
  ``reference`` at all.
* Every resource carries ``meta.tag`` ``https://housecall.example/fhir/CodeSystem/tag|demo``
  so a loader can find or purge the demo data with ``_tag=``.
* Date-times are America/New_York wall-clock times with an explicit offset.
* Slots are ``free``, ``busy`` (exactly the ones an upcoming Appointment in
  this bundle books) or ``busy-unavailable`` (blocked admin time).
* Clinical relationships respect licensure: every clinician that treats,
  books or is on the care team of a patient holds a licence that is current
  (``period`` covers ``today``) in the patient's home state.

``demo_summary(bundle)`` counts the entries per resource type.

All people, numbers and addresses are fictional (phone numbers use 555-01xx).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import random
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Resource = dict[str, Any]

# --------------------------------------------------------------------------
# Code systems and project URLs
# --------------------------------------------------------------------------

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NUCC = "http://nucc.org/provider-taxonomy"
WORK = "urn:housecall:work"  # the care team's kinds of work (workspace/inbox.py)
POOL = "urn:housecall:pool"  # the pool a work item waits in: a HealthcareService id
BCP47 = "urn:ietf:bcp:47"
USPS = "https://www.usps.com/"
THO = "http://terminology.hl7.org/CodeSystem"
ACT_CODE = f"{THO}/v3-ActCode"
ROLE_CODE = f"{THO}/v3-RoleCode"
INTERPRETATION = f"{THO}/v3-ObservationInterpretation"
OBS_CATEGORY = f"{THO}/observation-category"
US_CORE_DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"

HC = "https://housecall.example"
ORG_ID_SYSTEM = f"{HC}/org"
MRN_SYSTEM = f"{HC}/mrn"
LICENSE_SYSTEM = f"{HC}/license"  # + "/VT", "/ME": the state is the last segment
PERSON_SYSTEM = f"{HC}/person"  # same value on RelatedPersons that are one human
TAG_SYSTEM = f"{HC}/fhir/CodeSystem/tag"
SERVICE_SYSTEM = f"{HC}/fhir/CodeSystem/service"
QUALIFICATION_SYSTEM = f"{HC}/fhir/CodeSystem/qualification"
LICENSE_STATE_EXT = f"{HC}/fhir/StructureDefinition/license-state"
VISIT_URL = f"{HC}/visit"
DEMO_TAG = {"system": TAG_SYSTEM, "code": "demo", "display": "Housecall demo data"}

# uuid5 namespace for fullUrl: fixed, so fullUrls are as stable as the ids.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{HC}/demo")

# Slots are generated for this many days after `today` (weekdays only).
SLOT_HORIZON_DAYS = 14
CLINIC_START = dt.time(9, 0)
CLINIC_END = dt.time(12, 0)

# --------------------------------------------------------------------------
# Reference tables
# --------------------------------------------------------------------------

STATES = {"VT": "Vermont", "ME": "Maine"}

# Licensing boards by (state, profession board).
BOARDS = {
    ("VT", "medicine"): "Vermont Board of Medical Practice",
    ("VT", "nursing"): "Vermont State Board of Nursing",
    ("VT", "counseling"): "Vermont Office of Professional Regulation",
    ("ME", "medicine"): "Maine Board of Licensure in Medicine",
    ("ME", "nursing"): "Maine State Board of Nursing",
    ("ME", "counseling"): "Maine Board of Counseling Professionals Licensure",
}


@dataclass(frozen=True)
class Site:
    """A Location row; `state` None means the virtual clinic."""

    key: str
    name: str
    line: str | None = None
    city: str | None = None
    state: str | None = None
    postal: str | None = None
    phone: str | None = None
    lat: float | None = None
    lon: float | None = None


SITES = (
    Site(
        "burlington",
        "Housecall Burlington Clinic",
        "1 Lakeview Plaza, Suite 200",
        "Burlington",
        "VT",
        "05401",
        "802-555-0100",
        44.4759,
        -73.2121,
    ),
    Site(
        "portland",
        "Housecall Portland Clinic",
        "75 Harbor View Drive",
        "Portland",
        "ME",
        "04101",
        "207-555-0100",
        43.6591,
        -70.2568,
    ),
    Site("virtual", "Housecall Virtual Clinic"),
)

# Service key -> (name, HL7 service-category, HL7 service-type, comment).
# The service key is also a coding in SERVICE_SYSTEM: a stable handle for app code.
SERVICES = {
    "primary-care": (
        "Primary care video visit",
        ("17", "General Practice"),
        ("124", "General Practice/GP (doctor)"),
        "Same-week video visits with a primary care clinician licensed in your state.",
    ),
    "behavioral-health": (
        "Behavioral health video visit",
        ("22", "Mental Health"),
        ("305", "Counselling"),
        "Counselling and psychiatric medication management by video.",
    ),
    "cardiology-econsult": (
        "Cardiology e-consult",
        ("27", "Specialist Medical"),
        ("165", "Cardiology"),
        "Clinician-to-clinician cardiology advice; patients may be seen by video.",
    ),
    "remote-monitoring": (
        "Remote patient monitoring",
        ("17", "General Practice"),
        None,
        "Home blood pressure, weight, SpO2 and glucose devices reviewed by a nurse.",
    ),
}


@dataclass(frozen=True)
class License:
    """A state licence; `issued_years_ago` before and `expires_in_days` after today."""

    state: str
    issued_years_ago: int
    expires_in_days: int  # negative: the licence has lapsed


@dataclass(frozen=True)
class Clinician:
    """A Practitioner plus the single PractitionerRole and Schedule they get."""

    key: str
    given: tuple[str, ...]
    family: str
    credential: str
    gender: str
    taxonomy: tuple[str, str]  # NUCC code, display
    role: tuple[str, str]  # practitioner-role code, display
    team_role: tuple[str, str] | None  # SNOMED role on a CareTeam, when a code fits
    team_text: str
    board: str
    licenses: tuple[License, ...]
    service: str
    sites: tuple[str, ...]  # physical sites; every clinician also works virtually
    weekdays: tuple[int, ...]  # 0 = Monday
    slot_minutes: int = 20
    in_person_weekday: int | None = None  # that morning is at sites[0]
    languages: tuple[str, ...] = ("en",)
    doctor: bool = True


# Licences deliberately differ: VT-only, ME-only and both.  Dr. Okafor also
# holds a *lapsed* VT licence so rules must look at qualification.period.
CLINICIANS = (
    Clinician(
        "ellison",
        ("Margaret", "A."),
        "Ellison",
        "MD",
        "female",
        ("207Q00000X", "Family Medicine"),
        ("doctor", "Doctor"),
        ("62247001", "Family medicine specialist"),
        "Family physician",
        "medicine",
        (License("VT", 12, 410), License("ME", 4, 230)),
        "primary-care",
        ("burlington",),
        (0, 2, 4),
        in_person_weekday=2,
    ),
    Clinician(
        "okafor",
        ("Samuel",),
        "Okafor",
        "MD",
        "male",
        ("207R00000X", "Internal Medicine"),
        ("doctor", "Doctor"),
        None,
        "Internist",
        "medicine",
        (License("ME", 9, 520), License("VT", 8, -200)),
        "primary-care",
        ("portland",),
        (1, 3),
        in_person_weekday=3,
    ),
    Clinician(
        "raman",
        ("Priya",),
        "Raman",
        "MD",
        "female",
        ("207RC0000X", "Cardiovascular Disease"),
        ("doctor", "Doctor"),
        ("17561000", "Cardiologist"),
        "Cardiologist",
        "medicine",
        (License("VT", 6, 45), License("ME", 6, 300)),
        "cardiology-econsult",
        (),
        (2,),
    ),
    Clinician(
        "lindqvist",
        ("Hannah",),
        "Lindqvist",
        "MD",
        "female",
        ("208000000X", "Pediatrics"),
        ("doctor", "Doctor"),
        ("82296001", "Pediatrician"),
        "Pediatrician",
        "medicine",
        (License("VT", 7, 600),),
        "primary-care",
        ("burlington",),
        (0, 3),
        in_person_weekday=0,
    ),
    Clinician(
        "reyes",
        ("Daniel",),
        "Reyes",
        "MD",
        "male",
        ("2084P0800X", "Psychiatry"),
        ("doctor", "Doctor"),
        ("80584001", "Psychiatrist"),
        "Psychiatrist",
        "medicine",
        (License("ME", 5, 380),),
        "behavioral-health",
        (),
        (1, 4),
        languages=("en", "es"),
    ),
    Clinician(
        "thompson",
        ("Aisha",),
        "Thompson",
        "LCMHC",
        "female",
        ("101YM0800X", "Counselor, Mental Health"),
        ("counselor", "Counselor"),
        None,
        "Mental health counselor",
        "counseling",
        (License("VT", 3, 150),),
        "behavioral-health",
        (),
        (0, 2, 3),
        slot_minutes=40,
        doctor=False,
    ),
    Clinician(
        "dubois",
        ("Karen",),
        "Dubois",
        "FNP-C",
        "female",
        ("363LF0000X", "Nurse Practitioner, Family"),
        ("nurse", "Nurse"),
        ("224571005", "Nurse practitioner"),
        "Family nurse practitioner",
        "nursing",
        (License("VT", 10, 200), License("ME", 2, 500)),
        "primary-care",
        (),
        (1, 3, 4),
        doctor=False,
    ),
    Clinician(
        "whitcomb",
        ("Thomas",),
        "Whitcomb",
        "RN",
        "male",
        ("163W00000X", "Registered Nurse"),
        ("nurse", "Nurse"),
        ("224535009", "Registered nurse"),
        "Remote monitoring nurse",
        "nursing",
        (License("ME", 15, 330), License("VT", 3, 330)),
        "remote-monitoring",
        (),
        (0, 2),
        doctor=False,
    ),
)

# Condition key -> (SNOMED, display, ICD-10-CM, Spanish label).
CONDITIONS = {
    "htn": ("38341003", "Hypertensive disorder, systemic arterial", "I10", "presión arterial alta"),
    "t2dm": ("44054006", "Diabetes mellitus type 2", "E11.9", "diabetes tipo 2"),
    "asthma": ("195967001", "Asthma", "J45.909", "asma"),
    "depression": ("35489007", "Depressive disorder", "F32.A", "depresión"),
    "gad": ("21897009", "Generalized anxiety disorder", "F41.1", "ansiedad generalizada"),
    "chf": ("42343007", "Congestive heart failure", "I50.9", "insuficiencia cardiaca"),
    "afib": ("49436004", "Atrial fibrillation", "I48.91", "fibrilación auricular"),
    "hld": ("55822004", "Hyperlipidemia", "E78.5", "colesterol alto"),
    "otitis": ("65363002", "Otitis media", "H66.90", "otitis media"),
}

# One-line plans for after-visit summaries: (English, Spanish).
PLANS = {
    "htn": (
        "Keep taking your blood pressure medicine; check BP at home 3 times a week.",
        "Siga tomando su medicina para la presión; mídase la presión 3 veces por semana.",
    ),
    "t2dm": (
        "Continue metformin with meals; check fasting glucose each morning.",
        "Continúe la metformina con las comidas; mida su glucosa en ayunas cada mañana.",
    ),
    "asthma": (
        "Use the controller inhaler daily and the rescue inhaler as needed.",
        "Use el inhalador de control a diario y el de rescate cuando lo necesite.",
    ),
    "depression": (
        "Continue your medicine and weekly counselling; call 988 in a crisis.",
        "Continúe su medicina y la consejería semanal; llame al 988 en una crisis.",
    ),
    "gad": (
        "Practice the breathing exercises daily; continue your medicine.",
        "Practique los ejercicios de respiración a diario; continúe su medicina.",
    ),
    "chf": (
        "Weigh yourself every morning; call if you gain more than 1 kg in a day.",
        "Pésese cada mañana; llame si aumenta más de 1 kg en un día.",
    ),
    "afib": (
        "Take apixaban twice daily without missing doses; report any bleeding.",
        "Tome apixabán dos veces al día sin saltar dosis; avise si tiene sangrado.",
    ),
    "hld": (
        "Continue atorvastatin at bedtime; repeat lipid panel in 6 months.",
        "Continúe la atorvastatina al acostarse; repita el perfil de lípidos en 6 meses.",
    ),
    "otitis": (
        "Finish the full course; return if fever or ear pain comes back.",
        "Termine el tratamiento; regrese si vuelve la fiebre o el dolor de oído.",
    ),
    None: ("Routine check-up; keep up the good work.", "Chequeo de rutina; siga así."),
}


@dataclass(frozen=True)
class Med:
    """An RxNorm clinical drug with a typical sig and dispense."""

    rxnorm: str
    display: str
    sig: str
    route: tuple[str, str]
    per_day: int
    quantity: tuple[int, str]  # value, UCUM-ish unit
    supply_days: int
    refills: int
    as_needed: bool = False


ORAL = ("26643006", "Oral route")
INHALED = ("447694001", "Respiratory tract route")

MEDICATIONS = {
    "lisinopril": Med(
        "314076",
        "lisinopril 10 MG Oral Tablet",
        "Take 1 tablet by mouth once daily.",
        ORAL,
        1,
        (90, "{tbl}"),
        90,
        3,
    ),
    "amlodipine": Med(
        "197361",
        "amlodipine 5 MG Oral Tablet",
        "Take 1 tablet by mouth once daily.",
        ORAL,
        1,
        (90, "{tbl}"),
        90,
        3,
    ),
    "hctz": Med(
        "310798",
        "hydrochlorothiazide 25 MG Oral Tablet",
        "Take 1 tablet by mouth every morning.",
        ORAL,
        1,
        (90, "{tbl}"),
        90,
        3,
    ),
    "metformin": Med(
        "861007",
        "metformin hydrochloride 500 MG Oral Tablet",
        "Take 1 tablet by mouth twice daily with meals.",
        ORAL,
        2,
        (180, "{tbl}"),
        90,
        3,
    ),
    "atorvastatin": Med(
        "617310",
        "atorvastatin 20 MG Oral Tablet",
        "Take 1 tablet by mouth at bedtime.",
        ORAL,
        1,
        (90, "{tbl}"),
        90,
        3,
    ),
    "furosemide": Med(
        "313988",
        "furosemide 40 MG Oral Tablet",
        "Take 1 tablet by mouth every morning.",
        ORAL,
        1,
        (30, "{tbl}"),
        30,
        5,
    ),
    "metoprolol": Med(
        "866427",
        "24 HR metoprolol succinate 25 MG Extended Release Oral Tablet",
        "Take 1 tablet by mouth once daily.",
        ORAL,
        1,
        (90, "{tbl}"),
        90,
        3,
    ),
    "apixaban": Med(
        "1364445",
        "apixaban 5 MG Oral Tablet",
        "Take 1 tablet by mouth twice daily.",
        ORAL,
        2,
        (60, "{tbl}"),
        30,
        5,
    ),
    "sertraline": Med(
        "312941",
        "sertraline 50 MG Oral Tablet",
        "Take 1 tablet by mouth once daily.",
        ORAL,
        1,
        (30, "{tbl}"),
        30,
        2,
    ),
    "escitalopram": Med(
        "349332",
        "escitalopram 10 MG Oral Tablet",
        "Take 1 tablet by mouth once daily.",
        ORAL,
        1,
        (30, "{tbl}"),
        30,
        2,
    ),
    "albuterol": Med(
        "745679",
        "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs every 4 hours as needed for wheezing.",
        INHALED,
        0,
        (1, "{inhaler}"),
        30,
        1,
        as_needed=True,
    ),
    "fluticasone": Med(
        "895994",
        "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs twice daily; rinse mouth after use.",
        INHALED,
        2,
        (1, "{inhaler}"),
        30,
        5,
    ),
}

# Allergen key -> (system, code, display, category, type, criticality, reaction SNOMED, text).
ALLERGENS = {
    "penicillin": (
        RXNORM,
        "7980",
        "penicillin G",
        "medication",
        "allergy",
        "high",
        ("126485001", "Urticaria"),
        "Penicillin",
    ),
    "sulfa": (
        RXNORM,
        "10180",
        "sulfamethoxazole",
        "medication",
        "allergy",
        "low",
        ("271807003", "Eruption of skin"),
        "Sulfa antibiotics",
    ),
    "peanut": (
        SNOMED,
        "256349002",
        "Peanut - dietary",
        "food",
        "allergy",
        "high",
        ("39579001", "Anaphylaxis"),
        "Peanuts",
    ),
    "latex": (
        SNOMED,
        "111088007",
        "Latex",
        "environment",
        "allergy",
        "low",
        ("271807003", "Eruption of skin"),
        "Latex",
    ),
    # "No known drug allergy" is recorded as a positive statement, not an absence.
    "nkda": (SNOMED, "409137002", "No known drug allergy", None, None, None, None, "NKDA"),
}

# Vaccine key -> (CVX, display).
VACCINES = {
    "flu": ("140", "Influenza, seasonal, injectable, preservative free"),
    "covid": ("213", "SARS-COV-2 (COVID-19) vaccine, UNSPECIFIED FORMULATION"),
    "tdap": ("115", "Tdap"),
    "zoster": ("187", "zoster vaccine recombinant"),
    "pcv20": ("216", "Pneumococcal conjugate PCV20, polysaccharide CRM197 conjugate"),
    "mmr": ("03", "MMR"),
    "varicella": ("21", "varicella"),
    "dtap": ("20", "DTaP"),
    "ipv": ("10", "IPV"),
}

# LOINC observation definitions: key -> (code, display, UCUM, category, low, high, decimals).
VITALS = {
    "systolic": ("8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs", 90, 129, 0),
    "diastolic": ("8462-4", "Diastolic blood pressure", "mm[Hg]", "vital-signs", 60, 79, 0),
    "hr": ("8867-4", "Heart rate", "/min", "vital-signs", 60, 100, 0),
    "weight": ("29463-7", "Body weight", "kg", "vital-signs", None, None, 1),
    "spo2": (
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        "vital-signs",
        95,
        100,
        0,
    ),
    "temp": ("8310-5", "Body temperature", "Cel", "vital-signs", 36.1, 37.2, 1),
    "glucose": ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "laboratory", 70, 99, 0),
    "steps": ("41950-7", "Number of steps in 24 hour Measured", "/(24.h)", "activity", None, None, 0),
    "phq9": (
        "44261-6",
        "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
        "{score}",
        "survey",
        None,
        None,
        0,
    ),
    "gad7": (
        "70274-6",
        "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]",
        "{score}",
        "survey",
        None,
        None,
        0,
    ),
    "a1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "laboratory", 4.0, 5.6, 1),
    "creatinine": (
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        "laboratory",
        0.6,
        1.3,
        2,
    ),
    "potassium": (
        "2823-3",
        "Potassium [Moles/volume] in Serum or Plasma",
        "mmol/L",
        "laboratory",
        3.5,
        5.1,
        1,
    ),
    "bnp": (
        "30934-4",
        "Natriuretic peptide B [Mass/volume] in Serum or Plasma",
        "pg/mL",
        "laboratory",
        0,
        99,
        0,
    ),
    "chol": ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 0, 199, 0),
    "hdl": (
        "2085-9",
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
        "mg/dL",
        "laboratory",
        40,
        100,
        0,
    ),
    "ldl": (
        "13457-7",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        "mg/dL",
        "laboratory",
        0,
        99,
        0,
    ),
    "tg": ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 0, 149, 0),
}

# Lab panels (DiagnosticReport code) -> members, and which conditions order them.
PANELS = {
    "bmp": (("51990-0", "Basic metabolic panel - Blood"), ("glucose", "creatinine", "potassium")),
    "a1c": (("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), ("a1c",)),
    "lipid": (("24331-1", "Lipid 1996 panel - Serum or Plasma"), ("chol", "hdl", "ldl", "tg")),
    "bnp": (("30934-4", "Natriuretic peptide B [Mass/volume] in Serum or Plasma"), ("bnp",)),
}
PANELS_FOR_CONDITION = {
    "t2dm": ("a1c", "bmp"),
    "chf": ("bmp", "bnp"),
    "htn": ("bmp",),
    "afib": ("bmp",),
    "hld": ("lipid",),
}

# Typical lab values (mean, sd) when the condition is present vs. absent.
LAB_TYPICAL = {
    "glucose": {"t2dm": (150, 25), None: (92, 6)},
    "a1c": {"t2dm": (7.6, 0.5), None: (5.3, 0.2)},
    "creatinine": {"chf": (1.4, 0.15), None: (0.95, 0.1)},
    "potassium": {None: (4.3, 0.3)},
    "bnp": {"chf": (420, 90), None: (45, 15)},
    "chol": {"hld": (232, 18), None: (178, 15)},
    "hdl": {"hld": (42, 5), None: (55, 7)},
    "ldl": {"hld": (148, 15), None: (92, 12)},
    "tg": {"hld": (190, 30), None: (120, 20)},
}


@dataclass(frozen=True)
class PatientSpec:
    """One demo patient and the shape of their chart."""

    key: str
    given: tuple[str, ...]
    family: str
    gender: str
    age: int
    city: str
    state: str
    postal: str
    line: str
    pcp: str
    conditions: tuple[tuple[str, int, bool], ...]  # (condition, onset years ago, active)
    meds: tuple[tuple[str, str, str], ...]  # (med, reason condition, prescriber)
    visits: tuple[str, ...]  # past encounters, oldest first, by clinician key
    upcoming: tuple[str, ...]  # clinicians with a booked future slot
    vitals: dict[str, float]  # baselines
    rpm: tuple[str, ...] = ()  # metrics sent from home devices
    allergies: tuple[str, ...] = ()
    specialists: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("en",)  # first is preferred
    insured: bool = True
    subscriber: str | None = None  # patient key of the policy holder, if not self
    guardians: tuple[str, ...] = ()  # RELATED_PEOPLE keys


PATIENTS = (
    PatientSpec(
        "jose",
        ("José", "Luis"),
        "Núñez",
        "male",
        58,
        "Portland",
        "ME",
        "04103",
        "41 Forest Avenue, Apt 3",
        "okafor",
        (("t2dm", 8, True), ("htn", 6, True)),
        (("metformin", "t2dm", "okafor"), ("lisinopril", "htn", "okafor")),
        ("okafor", "okafor", "whitcomb", "okafor", "whitcomb"),
        ("okafor", "whitcomb"),
        {"systolic": 138, "diastolic": 86, "hr": 78, "weight": 92.0, "glucose": 152, "steps": 5200},
        rpm=("bp", "glucose", "weight", "steps"),
        allergies=("penicillin",),
        languages=("es", "en"),
    ),
    PatientSpec(
        "eleanor",
        ("Eleanor", "Grace"),
        "Whitaker",
        "female",
        82,
        "Burlington",
        "VT",
        "05401",
        "18 Maple Street",
        "ellison",
        (("chf", 5, True), ("afib", 7, True), ("htn", 20, True)),
        (
            ("furosemide", "chf", "raman"),
            ("metoprolol", "afib", "raman"),
            ("apixaban", "afib", "raman"),
            ("lisinopril", "htn", "ellison"),
        ),
        ("ellison", "raman", "whitcomb", "ellison", "whitcomb", "raman"),
        ("raman", "whitcomb"),
        {"systolic": 132, "diastolic": 74, "hr": 82, "weight": 61.5, "spo2": 94},
        rpm=("bp", "hr", "weight", "spo2"),
        allergies=("sulfa",),
        specialists=("raman",),
        guardians=("linda",),
    ),
    PatientSpec(
        "harold",
        ("Harold",),
        "Pelletier",
        "male",
        76,
        "Lewiston",
        "ME",
        "04240",
        "220 Lisbon Street",
        "okafor",
        (("chf", 3, True), ("t2dm", 12, True), ("htn", 15, True)),
        (
            ("furosemide", "chf", "raman"),
            ("metoprolol", "chf", "raman"),
            ("metformin", "t2dm", "okafor"),
            ("atorvastatin", "t2dm", "okafor"),
        ),
        ("okafor", "raman", "whitcomb", "okafor"),
        ("okafor",),
        {"systolic": 142, "diastolic": 80, "hr": 74, "weight": 98.4, "spo2": 95, "glucose": 165},
        rpm=("bp", "hr", "weight", "spo2", "glucose"),
        allergies=("latex",),
        specialists=("raman",),
    ),
    PatientSpec(
        "grace",
        ("Grace",),
        "Kowalski",
        "female",
        71,
        "Bangor",
        "ME",
        "04401",
        "9 Union Street",
        "dubois",
        (("t2dm", 10, True), ("htn", 14, True), ("hld", 9, True)),
        (("metformin", "t2dm", "dubois"), ("amlodipine", "htn", "dubois"), ("atorvastatin", "hld", "dubois")),
        ("dubois", "whitcomb", "dubois"),
        ("dubois",),
        {"systolic": 136, "diastolic": 78, "hr": 70, "weight": 77.0, "glucose": 140, "steps": 3900},
        rpm=("glucose", "bp", "steps"),
    ),
    PatientSpec(
        "robert",
        ("Robert", "J."),
        "Tremblay",
        "male",
        67,
        "Rutland",
        "VT",
        "05701",
        "57 Woodstock Avenue",
        "ellison",
        (("afib", 4, True), ("htn", 11, True), ("hld", 8, True)),
        (
            ("apixaban", "afib", "raman"),
            ("metoprolol", "afib", "raman"),
            ("atorvastatin", "hld", "ellison"),
            ("hctz", "htn", "ellison"),
        ),
        ("ellison", "raman", "ellison"),
        ("ellison",),
        {"systolic": 128, "diastolic": 78, "hr": 68, "weight": 88.0},
        allergies=("penicillin",),
        specialists=("raman",),
    ),
    PatientSpec(
        "anne-marie",
        ("Anne-Marie",),
        "Caron-Leblanc",
        "female",
        44,
        "Winooski",
        "VT",
        "05404",
        "3 Mill Street, Unit 12",
        "ellison",
        (("depression", 3, True), ("gad", 3, True)),
        (("sertraline", "depression", "ellison"),),
        ("ellison", "thompson", "thompson", "thompson"),
        ("thompson",),
        {"systolic": 118, "diastolic": 74, "hr": 72, "weight": 68.0, "phq9": 12, "gad7": 11},
        specialists=("thompson",),
    ),
    PatientSpec(
        "sophie",
        ("Sophie", "Anne"),
        "Bergeron",
        "female",
        38,
        "South Burlington",
        "VT",
        "05403",
        "240 Dorset Street",
        "dubois",
        (("gad", 2, True),),
        (("escitalopram", "gad", "dubois"),),
        ("dubois", "dubois"),
        ("dubois",),
        {"systolic": 112, "diastolic": 70, "hr": 70, "weight": 63.0, "gad7": 8},
    ),
    PatientSpec(
        "lucas",
        ("Lucas",),
        "Bergeron",
        "male",
        8,
        "South Burlington",
        "VT",
        "05403",
        "240 Dorset Street",
        "lindqvist",
        (("asthma", 4, True),),
        (("albuterol", "asthma", "lindqvist"), ("fluticasone", "asthma", "lindqvist")),
        ("lindqvist", "lindqvist", "lindqvist"),
        ("lindqvist",),
        {"weight": 26.0, "temp": 36.8, "spo2": 98},
        subscriber="sophie",
        guardians=("sophie-mom-lucas", "marc-dad-lucas"),
    ),
    PatientSpec(
        "emma",
        ("Emma",),
        "Bergeron",
        "female",
        5,
        "South Burlington",
        "VT",
        "05403",
        "240 Dorset Street",
        "lindqvist",
        (("otitis", 1, False),),
        (),
        ("lindqvist", "lindqvist"),
        ("lindqvist",),
        {"weight": 18.5, "temp": 36.9},
        allergies=("peanut",),
        subscriber="sophie",
        guardians=("sophie-mom-emma", "marc-dad-emma"),
    ),
    PatientSpec(
        "lucia",
        ("Lucía",),
        "Hernández",
        "female",
        29,
        "South Portland",
        "ME",
        "04106",
        "88 Cottage Road",
        "okafor",
        (("depression", 1, True),),
        (("sertraline", "depression", "reyes"),),
        ("okafor", "reyes", "reyes"),
        ("reyes",),
        {"systolic": 108, "diastolic": 68, "hr": 76, "weight": 59.0, "phq9": 14},
        specialists=("reyes",),
        languages=("es", "en"),
        insured=False,
    ),
    PatientSpec(
        "aiden",
        ("Aiden",),
        "Nguyen",
        "male",
        24,
        "Brunswick",
        "ME",
        "04011",
        "14 Maine Street, Apt 2B",
        "dubois",
        (("gad", 2, True), ("asthma", 15, True)),
        (("escitalopram", "gad", "reyes"), ("albuterol", "asthma", "dubois")),
        ("dubois", "reyes", "reyes", "reyes"),
        ("reyes",),
        {"systolic": 122, "diastolic": 76, "hr": 80, "weight": 74.0, "gad7": 13},
        specialists=("reyes",),
        insured=False,
    ),
    PatientSpec(
        "marcus",
        ("Marcus", "D."),
        "Johnson",
        "male",
        46,
        "Montpelier",
        "VT",
        "05602",
        "12 State Street",
        "dubois",
        (("htn", 1, True), ("hld", 1, True)),
        (("amlodipine", "htn", "dubois"),),
        ("dubois", "dubois"),
        ("dubois",),
        {"systolic": 146, "diastolic": 92, "hr": 74, "weight": 101.0},
        allergies=("nkda",),
    ),
)


@dataclass(frozen=True)
class Relative:
    """A RelatedPerson row: one resource per (person, patient) pair, as FHIR requires."""

    key: str
    person: str  # shared PERSON_SYSTEM identifier value for the same human
    patient: str
    given: tuple[str, ...]
    family: str
    gender: str
    age: int
    relationship: tuple[str, str]  # v3-RoleCode
    is_patient: str | None = None  # PatientSpec key when the relative is also our patient


# The Bergeron children share both parents; their mother is also a patient.
RELATED_PEOPLE = (
    Relative(
        "sophie-mom-lucas",
        "sophie-bergeron",
        "lucas",
        ("Sophie", "Anne"),
        "Bergeron",
        "female",
        38,
        ("MTH", "mother"),
        is_patient="sophie",
    ),
    Relative(
        "sophie-mom-emma",
        "sophie-bergeron",
        "emma",
        ("Sophie", "Anne"),
        "Bergeron",
        "female",
        38,
        ("MTH", "mother"),
        is_patient="sophie",
    ),
    Relative(
        "marc-dad-lucas", "marc-bergeron", "lucas", ("Marc",), "Bergeron", "male", 40, ("FTH", "father")
    ),
    Relative("marc-dad-emma", "marc-bergeron", "emma", ("Marc",), "Bergeron", "male", 40, ("FTH", "father")),
    Relative(
        "linda",
        "linda-whitaker-moss",
        "eleanor",
        ("Linda",),
        "Whitaker-Moss",
        "female",
        55,
        ("DAU", "natural daughter"),
    ),
)

# Condition -> clinician specialty that treats it, used to pick an encounter reason.
SPECIALTY_FOCUS = {
    "raman": ("chf", "afib", "htn"),
    "reyes": ("depression", "gad"),
    "thompson": ("depression", "gad"),
    "whitcomb": ("chf", "t2dm", "htn"),
}

# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _nth_sunday(year: int, month: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(6 - first.weekday()) % 7 + 7 * (n - 1))


def eastern_offset(day: dt.date) -> dt.timedelta:
    """UTC offset of America/New_York on `day`, for wall-clock times after 02:00.

    Hand-rolled from the US rule (DST from the second Sunday of March to the
    first Sunday of November, in force since 2007) instead of zoneinfo because
    the bundle must be byte-identical on machines without tz data.
    """
    dst = _nth_sunday(day.year, 3, 2) <= day < _nth_sunday(day.year, 11, 1)
    return dt.timedelta(hours=-4 if dst else -5)


def local_dt(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """An aware America/New_York datetime (hour >= 2)."""
    naive = dt.datetime.combine(day, dt.time()) + dt.timedelta(hours=hour, minutes=minute)
    return naive.replace(tzinfo=dt.timezone(eastern_offset(naive.date())))


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def _years_before(day: dt.date, years: int) -> dt.date:
    """The same calendar day `years` earlier (negative `years`: later)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a non-leap target year
        return day.replace(year=day.year - years, day=28)


def _weekday_on_or_before(day: dt.date, taken: set[dt.date] | None = None) -> dt.date:
    """Move weekend dates (and dates in `taken`) back to an earlier weekday."""
    taken = taken or set()
    while day.weekday() > 4 or day in taken:
        day -= dt.timedelta(days=1)
    return day


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _luhn_npi(base9: str) -> str:
    """A 10-digit NPI: 9 digits plus the Luhn check digit over the '80840' prefix."""
    digits = [int(c) for c in "80840" + base9]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:  # positions that will sit left of the check digit get doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return base9 + str((10 - total % 10) % 10)


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _cc(system: str, code: str, display: str, text: str | None = None) -> Resource:
    return {"coding": [_coding(system, code, display)], "text": text or display}


def _quantity(value: float, unit: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _round(value: float, decimals: int) -> float | int:
    return round(value) if decimals == 0 else round(value, decimals)


def _human_name(given: tuple[str, ...], family: str, suffix: str | None = None) -> Resource:
    name: Resource = {"use": "official", "family": family, "given": list(given)}
    text = " ".join((*given, family))
    if suffix:
        name["suffix"] = [suffix]
        text += f", {suffix}"
    name["text"] = text
    return name


def _address(line: str, city: str, state: str, postal: str, use: str = "home") -> Resource:
    return {
        "use": use,
        "type": "both",
        "line": [line],
        "city": city,
        "state": state,
        "postalCode": postal,
        "country": "US",
    }


def _interpretation(value: float, low: float | None, high: float | None) -> list[Resource]:
    """H/L flags only when abnormal, as labs report them."""
    if high is not None and value > high:
        return [_cc(INTERPRETATION, "H", "High")]
    if low is not None and value < low:
        return [_cc(INTERPRETATION, "L", "Low")]
    return []


def _reference_range(unit: str, low: float | None, high: float | None) -> list[Resource]:
    if low is None and high is None:
        return []
    rng: Resource = {}
    if low is not None:
        rng["low"] = _quantity(low, unit)
    if high is not None:
        rng["high"] = _quantity(high, unit)
    return [rng]


def _service_cc(service: str) -> Resource:
    name, _category, service_type, _comment = SERVICES[service]
    coding = [_coding(SERVICE_SYSTEM, service, name)]
    if service_type:
        coding.append(_coding(f"{THO}/service-type", *service_type))
    return {"coding": coding, "text": name}


def _visit_mode(virtual: bool) -> Resource:
    # The same ActCode concepts as Encounter.class, so slot, appointment and
    # encounter agree on "virtual" vs "in person".
    if virtual:
        return _cc(ACT_CODE, "VR", "virtual", "Video visit")
    return _cc(ACT_CODE, "AMB", "ambulatory", "In-person visit")


# --------------------------------------------------------------------------
# Bundle assembly
# --------------------------------------------------------------------------


class _Builder:
    """Collects entries; owns id and fullUrl derivation."""

    def __init__(self, seed: int, today: dt.date) -> None:
        self.seed = seed
        self.today = today
        tag = str(seed).replace("-", "m")
        if len(tag) > 12:  # ids are capped at 64 chars: huge seeds use a digest
            tag = uuid.uuid5(_UUID_NAMESPACE, tag).hex[:12]
        self.prefix = f"demo{tag}"
        self.entries: list[Resource] = []

    def rng(self, topic: str) -> random.Random:
        # One stream per topic: editing one table row cannot reshuffle the
        # values generated for unrelated rows, and nothing depends on `today`.
        return random.Random(f"{self.seed}:{topic}")

    def id(self, kind: str, *parts: object) -> str:
        return "-".join((self.prefix, kind, *(str(p) for p in parts)))

    def ref(self, resource_type: str, kind: str, *parts: object) -> str:
        return f"{resource_type}/{self.id(kind, *parts)}"

    def add(self, resource: Resource) -> str:
        """Append `resource` as a PUT entry (tagged demo) and return its reference."""
        rtype, rid = resource["resourceType"], resource["id"]
        ordered: Resource = {"resourceType": rtype, "id": rid, "meta": {"tag": [dict(DEMO_TAG)]}}
        ordered.update((k, v) for k, v in resource.items() if k not in ordered)
        self.entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{rtype}/{rid}')}",
                "resource": ordered,
                "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
            }
        )
        return f"{rtype}/{rid}"


@dataclass
class _Context:
    """Cross-references shared by the builder functions."""

    b: _Builder
    org: str = ""
    payer: str = ""
    sites: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    practitioners: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    slots: dict[str, list[Resource]] = field(default_factory=dict)  # clinician -> slots
    patients: dict[str, str] = field(default_factory=dict)
    relatives: dict[str, str] = field(default_factory=dict)
    conditions: dict[tuple[str, str], str] = field(default_factory=dict)
    visits: list[tuple[Any, str]] = field(default_factory=list)  # (_Visit, Encounter reference)


CLINICIAN_BY_KEY = {c.key: c for c in CLINICIANS}
SITE_BY_KEY = {s.key: s for s in SITES}


def _build_organizations(ctx: _Context) -> None:
    b = ctx.b
    npi = _luhn_npi(str(b.rng("org-npi").randint(100_000_000, 199_999_999)))
    ctx.org = b.add(
        {
            "resourceType": "Organization",
            "id": b.id("org", "housecall"),
            "identifier": [
                {"system": ORG_ID_SYSTEM, "value": f"housecall-demo-{b.seed}"},
                {"system": NPI_SYSTEM, "value": npi},
            ],
            "active": True,
            "type": [_cc(f"{THO}/organization-type", "prov", "Healthcare Provider")],
            "name": "Housecall Demo Health",
            "alias": ["Housecall"],
            "telecom": [
                {"system": "phone", "value": "802-555-0100", "use": "work"},
                {"system": "email", "value": "care@housecall.example", "use": "work"},
                {"system": "url", "value": HC, "use": "work"},
            ],
            "address": [_address("1 Lakeview Plaza, Suite 200", "Burlington", "VT", "05401", use="work")],
        }
    )
    ctx.payer = b.add(
        {
            "resourceType": "Organization",
            "id": b.id("org", "payer"),
            "identifier": [{"system": f"{HC}/payer", "value": "DHP"}],
            "active": True,
            "type": [_cc(f"{THO}/organization-type", "pay", "Payer")],
            "name": "Demo Health Plan",
            "telecom": [{"system": "phone", "value": "207-555-0199", "use": "work"}],
            "address": [_address("500 Capitol Street", "Augusta", "ME", "04330", use="work")],
        }
    )


# Community pharmacies patients choose from when they ask for a refill (NUCC taxonomy type).
PHARMACIES = (
    ("lakeside", "Lakeside Pharmacy", "12 Church Street", "Burlington", "VT", "05401", "802-555-0141"),
    ("harbor", "Harbor Drug", "88 Fore Street", "Portland", "ME", "04101", "207-555-0142"),
    (
        "green-mountain",
        "Green Mountain Apothecary",
        "3 Main Street",
        "Montpelier",
        "VT",
        "05602",
        "802-555-0143",
    ),
)


def _build_pharmacies(ctx: _Context) -> None:
    b = ctx.b
    for key, name, line, city, state, postal, phone in PHARMACIES:
        b.add(
            {
                "resourceType": "Organization",
                "id": b.id("pharmacy", key),
                "active": True,
                "type": [_cc(NUCC, "3336C0003X", "Community/Retail Pharmacy")],
                "name": name,
                "telecom": [{"system": "phone", "value": phone, "use": "work"}],
                "address": [_address(line, city, state, postal, use="work")],
            }
        )


def _build_locations(ctx: _Context) -> None:
    b = ctx.b
    loc_type = f"{THO}/location-physical-type"
    for site in SITES:
        res: Resource = {
            "resourceType": "Location",
            "id": b.id("loc", site.key),
            "status": "active",
            "name": site.name,
        }
        if site.state is None:
            # A "kind" location: where a video visit happens, not a building.
            res.update(
                {
                    "description": "Video visits; patients join from home.",
                    "mode": "kind",
                    "telecom": [{"system": "url", "value": VISIT_URL, "use": "work"}],
                    "physicalType": _cc(loc_type, "vi", "Virtual"),
                }
            )
        else:
            res.update(
                {
                    "mode": "instance",
                    "type": [_cc(ROLE_CODE, "OF", "Outpatient facility")],
                    "telecom": [{"system": "phone", "value": site.phone, "use": "work"}],
                    "address": _address(site.line, site.city, site.state, site.postal, use="work"),
                    "physicalType": _cc(loc_type, "bu", "Building"),
                    "position": {"longitude": site.lon, "latitude": site.lat},
                    "hoursOfOperation": [
                        {
                            "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                            "openingTime": "08:00:00",
                            "closingTime": "17:00:00",
                        }
                    ],
                }
            )
        res["managingOrganization"] = {"reference": ctx.org}
        ctx.sites[site.key] = b.add(res)


def _build_services(ctx: _Context) -> None:
    b = ctx.b
    for key, (name, category, _stype, comment) in SERVICES.items():
        in_person = key == "primary-care"
        locations = [ctx.sites["virtual"]]
        if in_person:
            locations += [ctx.sites["burlington"], ctx.sites["portland"]]
        ctx.services[key] = b.add(
            {
                "resourceType": "HealthcareService",
                "id": b.id("svc", key),
                "active": True,
                "providedBy": {"reference": ctx.org},
                "category": [_cc(f"{THO}/service-category", *category)],
                "type": [_service_cc(key)],
                "location": [{"reference": r} for r in locations],
                "name": name,
                "comment": comment,
                "telecom": [{"system": "phone", "value": "802-555-0100", "use": "work"}],
                "communication": [_cc(BCP47, "en", "English"), _cc(BCP47, "es", "Spanish")],
                # E-consults are asynchronous requests, everything else is booked.
                "appointmentRequired": key != "cardiology-econsult",
                "availableTime": [
                    {
                        "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                        "availableStartTime": "08:00:00",
                        "availableEndTime": "17:00:00",
                    }
                ],
            }
        )


def _qualification(b: _Builder, c: Clinician, lic: License, number: str) -> Resource:
    return {
        "extension": [
            {
                "url": LICENSE_STATE_EXT,
                "valueCodeableConcept": _cc(USPS, lic.state, STATES[lic.state]),
            }
        ],
        "identifier": [{"system": f"{LICENSE_SYSTEM}/{lic.state}", "value": number}],
        "code": {
            "coding": [_coding(QUALIFICATION_SYSTEM, "state-license", "State license to practice")],
            "text": "State medical license",
        },
        "period": {
            "start": _years_before(b.today, lic.issued_years_ago).isoformat(),
            "end": (b.today + dt.timedelta(days=lic.expires_in_days)).isoformat(),
        },
        "issuer": {"display": BOARDS[(lic.state, c.board)]},  # board names include the state
    }


_WEEKDAY_CODES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _build_clinicians(ctx: _Context) -> None:
    b = ctx.b
    rng = b.rng("clinicians")
    for n, c in enumerate(CLINICIANS, start=1):
        npi = _luhn_npi(str(rng.randint(100_000_000, 299_999_999)))
        phone = f"802-555-01{10 + n:02d}"
        ctx.practitioners[c.key] = b.add(
            {
                "resourceType": "Practitioner",
                "id": b.id("prac", c.key),
                "identifier": [{"system": NPI_SYSTEM, "value": npi}],
                "active": True,
                "name": [_human_name(c.given, c.family, c.credential)],
                "telecom": [
                    {"system": "phone", "value": phone, "use": "work"},
                    {"system": "email", "value": f"{c.key}@housecall.example", "use": "work"},
                ],
                "gender": c.gender,
                "qualification": [
                    _qualification(b, c, lic, f"{lic.state}-{rng.randint(10_000, 99_999)}")
                    for lic in c.licenses
                ],
                "communication": [
                    _cc(BCP47, lang, {"en": "English", "es": "Spanish"}[lang]) for lang in c.languages
                ],
            }
        )
        sites = [ctx.sites[s] for s in (*c.sites, "virtual")]
        ctx.roles[c.key] = b.add(
            {
                "resourceType": "PractitionerRole",
                "id": b.id("role", c.key),
                "active": True,
                "period": {"start": _years_before(b.today, 2).isoformat()},
                "practitioner": {"reference": ctx.practitioners[c.key]},
                "organization": {"reference": ctx.org},
                "code": [_cc(f"{THO}/practitioner-role", *c.role)]
                if c.role[0] != "counselor"
                else [{"text": c.team_text}],
                "specialty": [_cc(NUCC, *c.taxonomy)],
                "location": [{"reference": r} for r in sites],
                "healthcareService": [{"reference": ctx.services[c.service]}],
                "telecom": [{"system": "phone", "value": phone, "use": "work"}],
                "availableTime": [
                    {
                        "daysOfWeek": [_WEEKDAY_CODES[d] for d in c.weekdays],
                        "availableStartTime": CLINIC_START.isoformat(),
                        "availableEndTime": CLINIC_END.isoformat(),
                    }
                ],
                "availabilityExceptions": "Times are America/New_York. Closed on US federal holidays.",
            }
        )


def _build_schedules(ctx: _Context) -> None:
    """One Schedule per role and its weekday-morning slots for the next 14 days.

    Any 14 consecutive days hold every weekday exactly twice, so the number of
    slots per role -- and therefore the slot ids -- never depend on `today`.
    """
    b = ctx.b
    horizon_start = b.today + dt.timedelta(days=1)
    horizon_end = b.today + dt.timedelta(days=SLOT_HORIZON_DAYS)
    for c in CLINICIANS:
        sched_ref = b.add(
            {
                "resourceType": "Schedule",
                "id": b.id("sched", c.key),
                "active": True,
                "serviceCategory": [_cc(f"{THO}/service-category", *SERVICES[c.service][1])],
                "serviceType": [_service_cc(c.service)],
                "specialty": [_cc(NUCC, *c.taxonomy)],
                "actor": [{"reference": ctx.roles[c.key]}]
                + [{"reference": ctx.sites[s]} for s in (*c.sites, "virtual")],
                "planningHorizon": {
                    "start": _iso(local_dt(horizon_start, 8)),
                    "end": _iso(local_dt(horizon_end, 18)),
                },
                "comment": f"{c.team_text} weekday mornings (America/New_York).",
            }
        )
        rng = b.rng(f"slots:{c.key}")
        slots: list[Resource] = []
        for offset in range(1, SLOT_HORIZON_DAYS + 1):
            day = b.today + dt.timedelta(days=offset)
            if day.weekday() not in c.weekdays:
                continue
            virtual = day.weekday() != c.in_person_weekday
            minute = CLINIC_START.hour * 60
            while minute + c.slot_minutes <= CLINIC_END.hour * 60:
                start = local_dt(day, 0, minute)
                slot: Resource = {
                    "resourceType": "Slot",
                    "id": b.id("slot", c.key, f"{len(slots) + 1:03d}"),
                    "serviceType": [_service_cc(c.service)],
                    "specialty": [_cc(NUCC, *c.taxonomy)],
                    "appointmentType": _visit_mode(virtual),
                    "schedule": {"reference": sched_ref},
                    "status": "free",
                    "start": _iso(start),
                    "end": _iso(start + dt.timedelta(minutes=c.slot_minutes)),
                }
                if not virtual:
                    slot["comment"] = f"In person at {SITE_BY_KEY[c.sites[0]].name}"
                slots.append(slot)
                minute += c.slot_minutes
        # A couple of blocked slots per clinician (huddles, admin time).
        for slot in rng.sample(slots, 2):
            slot["status"] = "busy-unavailable"
            slot["comment"] = "Blocked: team huddle"
        ctx.slots[c.key] = slots  # added to the bundle after appointments mark them busy


def _phones() -> dict[str, str]:
    """Fictional 555-01xx numbers: patients by key, other relatives by person id.

    Children have no phone of their own (the household line of the parent who
    is our patient is used) and a person shared by two RelatedPersons keeps
    one number.
    """
    phones: dict[str, str] = {}
    for n, p in enumerate(PATIENTS, start=1):
        phones[p.key] = f"{'802' if p.state == 'VT' else '207'}-555-01{40 + n:02d}"
    for n, r in enumerate(RELATED_PEOPLE, start=1):
        phones.setdefault(r.person, phones.get(r.is_patient or "", f"802-555-01{70 + n:02d}"))
    return phones


def _birth_date(b: _Builder, age: int, key: str) -> dt.date:
    # A birthday 1-11 months ago keeps the stated age exact for any `today`.
    days = b.rng(f"birth:{key}").randint(30, 330)
    return _years_before(b.today - dt.timedelta(days=days), age)


def _build_patients(ctx: _Context) -> None:
    b = ctx.b
    rng = b.rng("patients")
    phones = _phones()
    for p in PATIENTS:
        email = f"{_ascii(p.given[0])}.{_ascii(p.family)}@example.com".replace(" ", "")
        res: Resource = {
            "resourceType": "Patient",
            "id": b.id("pat", p.key),
            "identifier": [
                {
                    "use": "usual",
                    "type": _cc(f"{THO}/v2-0203", "MR", "Medical record number"),
                    "system": MRN_SYSTEM,
                    "value": f"HC{rng.randint(1_000_000, 9_999_999)}",
                }
            ],
            "active": True,
            "name": [_human_name(p.given, p.family)],
            "telecom": [
                {"system": "phone", "value": phones[p.key], "use": "mobile"},
                {"system": "email", "value": email, "use": "home"},
            ],
            "gender": p.gender,
            "birthDate": _birth_date(b, p.age, p.key).isoformat(),
            "address": [_address(p.line, p.city, p.state, p.postal)],
            "communication": [
                {"language": _cc(BCP47, lang, {"en": "English", "es": "Spanish"}[lang]), "preferred": i == 0}
                for i, lang in enumerate(p.languages)
            ],
            "generalPractitioner": [{"reference": ctx.practitioners[p.pcp]}],
            "managingOrganization": {"reference": ctx.org},
        }
        if p.guardians:  # minors: contact goes through the parent's line
            parent = next(r for r in RELATED_PEOPLE if r.key == p.guardians[0])
            res["telecom"] = [{"system": "phone", "value": phones[parent.person], "use": "home"}]
        # A parent who is also our patient links to her RelatedPerson records so
        # proxy access resolves from either side.
        links = [
            {"other": {"reference": b.ref("RelatedPerson", "rp", r.key)}, "type": "seealso"}
            for r in RELATED_PEOPLE
            if r.is_patient == p.key
        ]
        if links:
            res["link"] = links
        ctx.patients[p.key] = b.add(res)


def _build_relatives(ctx: _Context) -> None:
    b = ctx.b
    patients = {p.key: p for p in PATIENTS}
    phones = _phones()
    for r in RELATED_PEOPLE:
        pat = patients[r.patient]
        # The same human gets the same birth date on every record.
        birth = _birth_date(b, r.age, r.is_patient or f"rp:{r.person}")
        ctx.relatives[r.key] = b.add(
            {
                "resourceType": "RelatedPerson",
                "id": b.id("rp", r.key),
                "identifier": [{"system": PERSON_SYSTEM, "value": r.person}],
                "active": True,
                "patient": {"reference": ctx.patients[r.patient]},
                # Parents also carry the generic PRN code so proxy rules need one check.
                "relationship": [_cc(ROLE_CODE, *r.relationship)]
                + ([_cc(ROLE_CODE, "PRN", "parent")] if r.relationship[0] in {"MTH", "FTH"} else []),
                "name": [_human_name(r.given, r.family)],
                "telecom": [{"system": "phone", "value": phones[r.person], "use": "mobile"}],
                "gender": r.gender,
                "birthDate": birth.isoformat(),
                "address": [_address(pat.line, pat.city, pat.state, pat.postal)],
            }
        )


def _build_coverage(ctx: _Context) -> None:
    b = ctx.b
    rng = b.rng("coverage")
    member_ids = {p.key: f"DHP{rng.randint(10_000_000, 99_999_999)}" for p in PATIENTS}
    cov_class = f"{THO}/coverage-class"
    # Dependent numbers per policy: 00 is the subscriber, children 01, 02, ...
    dependents: dict[str, list[str]] = {}
    for p in PATIENTS:
        if p.insured:
            dependents.setdefault(p.subscriber or p.key, [p.subscriber or p.key])
            if p.subscriber:
                dependents[p.subscriber].append(p.key)
    for p in PATIENTS:
        if not p.insured:
            continue
        holder = p.subscriber or p.key
        b.add(
            {
                "resourceType": "Coverage",
                "id": b.id("cov", p.key),
                "status": "active",
                "type": _cc(ACT_CODE, "HIP", "health insurance plan policy"),
                "subscriber": {"reference": ctx.patients[holder]},
                "subscriberId": member_ids[holder],
                "beneficiary": {"reference": ctx.patients[p.key]},
                "dependent": f"{dependents[holder].index(p.key):02d}",
                "relationship": _cc(
                    f"{THO}/subscriber-relationship",
                    *(("self", "Self") if holder == p.key else ("child", "Child")),
                ),
                "period": {
                    "start": dt.date(b.today.year, 1, 1).isoformat(),
                    "end": dt.date(b.today.year, 12, 31).isoformat(),
                },
                "payor": [{"reference": ctx.payer}],
                "class": [
                    {
                        "type": _cc(cov_class, "group", "Group"),
                        "value": f"GRP-{p.state}-0042",
                        "name": f"Demo Health Plan {STATES[p.state]} Small Business",
                    },
                    {
                        "type": _cc(cov_class, "plan", "Plan"),
                        "value": "SILVER-TH",
                        "name": "Silver with telehealth",
                    },
                ],
            }
        )


def _build_care_teams(ctx: _Context) -> None:
    b = ctx.b
    for p in PATIENTS:
        participants = []
        members = (p.pcp, "whitcomb", *p.specialists)
        for key in dict.fromkeys(members):  # de-duplicate, keep order
            c = CLINICIAN_BY_KEY[key]
            if key == p.pcp:
                role = (
                    _cc(SNOMED, "446050000", "Primary care physician")
                    if c.doctor
                    else _cc(SNOMED, *c.team_role, text="Primary care provider")
                )
            elif c.team_role:
                role = _cc(SNOMED, *c.team_role, text=c.team_text)
            else:
                role = {"text": c.team_text}
            participants.append(
                {
                    "role": [role],
                    "member": {"reference": ctx.practitioners[key]},
                    "onBehalfOf": {"reference": ctx.org},
                }
            )
        for r in RELATED_PEOPLE:
            if r.patient == p.key:
                participants.append(
                    {
                        "role": [_cc(SNOMED, "133932002", "Caregiver")],
                        "member": {"reference": ctx.relatives[r.key]},
                    }
                )
        b.add(
            {
                "resourceType": "CareTeam",
                "id": b.id("team", p.key),
                "status": "active",
                "name": f"{' '.join(p.given[:1])} {p.family} care team",
                "subject": {"reference": ctx.patients[p.key]},
                "period": {"start": _years_before(b.today, 1).isoformat()},
                "participant": participants,
                "managingOrganization": [{"reference": ctx.org}],
            }
        )


def _build_conditions(ctx: _Context) -> None:
    b = ctx.b
    for p in PATIENTS:
        for cond, years_ago, active in p.conditions:
            snomed, display, icd, _es = CONDITIONS[cond]
            onset = _years_before(b.today, years_ago) - dt.timedelta(
                days=b.rng(f"onset:{p.key}:{cond}").randint(0, 200)
            )
            res: Resource = {
                "resourceType": "Condition",
                "id": b.id("cond", p.key, cond),
                "clinicalStatus": _cc(
                    f"{THO}/condition-clinical",
                    *(("active", "Active") if active else ("resolved", "Resolved")),
                ),
                "verificationStatus": _cc(f"{THO}/condition-ver-status", "confirmed", "Confirmed"),
                "category": [_cc(f"{THO}/condition-category", "problem-list-item", "Problem List Item")],
                "code": {"coding": [_coding(SNOMED, snomed, display), _coding(ICD10, icd)], "text": display},
                "subject": {"reference": ctx.patients[p.key]},
                "onsetDateTime": onset.isoformat(),
                "recordedDate": onset.isoformat(),
                "recorder": {"reference": ctx.practitioners[p.pcp]},
            }
            if not active:
                res["abatementDateTime"] = (onset + dt.timedelta(days=14)).isoformat()
            ctx.conditions[(p.key, cond)] = b.add(res)


def _observation(
    obs_id: str,
    patient: str,
    key: str,
    value: float,
    when: dt.datetime,
    performer: str | None = None,
    encounter: str | None = None,
) -> Resource:
    code, display, unit, category, low, high, decimals = VITALS[key]
    value = _round(value, decimals)
    coding = [_coding(LOINC, code, display)]
    if key == "spo2":  # the vital-signs profile expects 2708-6 alongside 59408-5
        coding.append(_coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"))
    if key == "steps":
        coding.append(_coding(LOINC, "55423-8", "Number of steps in unspecified time Pedometer"))
    res: Resource = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "category": [_cc(OBS_CATEGORY, category, category.replace("-", " ").title())],
        "code": {"coding": coding, "text": display},
        "subject": {"reference": patient},
        "effectiveDateTime": _iso(when),
        "valueQuantity": _quantity(value, unit),
    }
    if encounter:
        res["encounter"] = {"reference": encounter}
    if performer:
        res["performer"] = [{"reference": performer}]
    if interp := _interpretation(value, low, high):
        res["interpretation"] = interp
    if ref_range := _reference_range(unit, low, high):
        res["referenceRange"] = ref_range
    return res


def _blood_pressure(
    obs_id: str,
    patient: str,
    systolic: float,
    diastolic: float,
    when: dt.datetime,
    performer: str | None = None,
    encounter: str | None = None,
) -> Resource:
    components = []
    for key, value in (("systolic", systolic), ("diastolic", diastolic)):
        code, display, unit, _cat, low, high, _dec = VITALS[key]
        comp: Resource = {"code": _cc(LOINC, code, display), "valueQuantity": _quantity(round(value), unit)}
        if interp := _interpretation(round(value), low, high):
            comp["interpretation"] = interp
        comp["referenceRange"] = _reference_range(unit, low, high)
        components.append(comp)
    res: Resource = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "category": [_cc(OBS_CATEGORY, "vital-signs", "Vital Signs")],
        "code": _cc(LOINC, "85354-9", "Blood pressure panel with all children optional"),
        "subject": {"reference": patient},
        "effectiveDateTime": _iso(when),
    }
    if encounter:
        res["encounter"] = {"reference": encounter}
    if performer:
        res["performer"] = [{"reference": performer}]
    res["component"] = components
    return res


def _reason(p: PatientSpec, clinician: str) -> str | None:
    active = [c for c, _y, is_active in p.conditions if is_active]
    focus = SPECIALTY_FOCUS.get(clinician)
    if focus:
        for cond in focus:
            if cond in active:
                return cond
    return active[0] if active else None


# Labels for the measurements quoted in after-visit summaries: (English, Spanish).
SUMMARY_LABELS = {
    "bp": ("Blood pressure", "Presión arterial"),
    "hr": ("Heart rate", "Pulso"),
    "weight": ("Weight", "Peso"),
    "temp": ("Temperature", "Temperatura"),
    "spo2": ("Oxygen saturation", "Saturación de oxígeno"),
    "phq9": ("PHQ-9 score", "Puntaje PHQ-9"),
    "gad7": ("GAD-7 score", "Puntaje GAD-7"),
}


def _after_visit_summary(
    p: PatientSpec,
    c: Clinician,
    when: dt.datetime,
    virtual: bool,
    reason: str | None,
    measurements: list[tuple[str, str]],
) -> tuple[str, str]:
    """Short plain-text after-visit summary in the patient's preferred language.

    Returns (BCP-47 language, text).
    """
    name = " ".join((*p.given, p.family))
    clinician = " ".join((*c.given, c.family)) + f", {c.credential}"
    day = when.date().isoformat()
    spanish = p.languages[0] == "es"
    vitals = [f"{SUMMARY_LABELS[key][spanish]} {value}" for key, value in measurements]
    if spanish:
        mode = "video" if virtual else "en persona"
        lines = [
            "Resumen de la visita",
            f"Paciente: {name}",
            f"Visita: {day} ({mode}) con {clinician}",
            f"Motivo: {CONDITIONS[reason][3] if reason else 'chequeo de rutina'}",
        ]
        if vitals:
            lines.append("Signos vitales: " + "; ".join(vitals))
        lines += [
            f"Plan: {PLANS[reason][1]}",
            "¿Preguntas? Escriba a su equipo en la app Housecall o llame al 802-555-0100.",
        ]
        return "es", "\n".join(lines) + "\n"
    mode = "video" if virtual else "in person"
    lines = [
        "After-visit summary",
        f"Patient: {name}",
        f"Visit: {day} ({mode}) with {clinician}",
        f"Reason: {CONDITIONS[reason][1] if reason else 'Routine check-up'}",
    ]
    if vitals:
        lines.append("Vitals: " + "; ".join(vitals))
    lines += [
        f"Plan: {PLANS[reason][0]}",
        "Questions? Message your care team in the Housecall app or call 802-555-0100.",
    ]
    return "en", "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Visit:
    """One past visit: everything the appointment, encounter and notes share."""

    p: PatientSpec
    c: Clinician
    n: int  # 1-based, oldest first
    start: dt.datetime
    end: dt.datetime
    in_person: bool
    site: str  # Location reference
    reason: str | None  # condition key


def _plan_visits(ctx: _Context, p: PatientSpec, rng: random.Random) -> list[_Visit]:
    """Spread the patient's visits over the last ~15 months, one per weekday."""
    b = ctx.b
    days_ago = sorted(rng.sample(range(10, 450), len(p.visits)), reverse=True)
    taken: set[dt.date] = set()
    visits = []
    for n, (key, ago) in enumerate(zip(p.visits, days_ago, strict=True), start=1):
        c = CLINICIAN_BY_KEY[key]
        day = _weekday_on_or_before(b.today - dt.timedelta(days=ago), taken)
        taken.add(day)
        per_morning = (CLINIC_END.hour - CLINIC_START.hour) * 60 // c.slot_minutes
        start = local_dt(day, CLINIC_START.hour, rng.randrange(per_morning) * c.slot_minutes)
        # A child's first (well) visit and about a quarter of the other visits
        # with clinic-based clinicians happened in person.
        in_person = bool(c.sites) and ((p.age < 18 and n == 1) or rng.random() < 0.25)
        visits.append(
            _Visit(
                p,
                c,
                n,
                start,
                start + dt.timedelta(minutes=c.slot_minutes),
                in_person,
                ctx.sites[c.sites[0]] if in_person else ctx.sites["virtual"],
                _reason(p, key),
            )
        )
    return visits


def _add_past_appointment(ctx: _Context, v: _Visit, rng: random.Random) -> str:
    res: Resource = {
        "resourceType": "Appointment",
        "id": ctx.b.id("appt", v.p.key, f"past{v.n}"),
        "status": "fulfilled",
        "serviceCategory": [_cc(f"{THO}/service-category", *SERVICES[v.c.service][1])],
        "serviceType": [_service_cc(v.c.service)],
        "appointmentType": _visit_mode(not v.in_person),
        "description": f"{SERVICES[v.c.service][0]} with {v.c.family}",
        "start": _iso(v.start),
        "end": _iso(v.end),
        "minutesDuration": v.c.slot_minutes,
        "created": _iso(v.start - dt.timedelta(days=rng.randint(3, 20), hours=1)),
        "participant": [
            {"actor": {"reference": ref}, "required": "required", "status": "accepted"}
            for ref in (ctx.patients[v.p.key], ctx.practitioners[v.c.key], v.site)
        ],
    }
    if v.reason:
        res["reasonReference"] = [{"reference": ctx.conditions[(v.p.key, v.reason)]}]
    return ctx.b.add(res)


def _add_encounter(ctx: _Context, v: _Visit, appointment: str) -> str:
    if not v.in_person:
        enc_class = _coding(ACT_CODE, "VR", "virtual")
        enc_type = ("448337001", "Telemedicine consultation with patient")
    else:
        enc_class = _coding(ACT_CODE, "AMB", "ambulatory")
        enc_type = (
            ("410620009", "Well child visit") if v.p.age < 18 else ("185349003", "Encounter for check up")
        )
    period = {"start": _iso(v.start), "end": _iso(v.end)}
    res: Resource = {
        "resourceType": "Encounter",
        "id": ctx.b.id("enc", v.p.key, v.n),
        "status": "finished",
        "class": enc_class,
        "type": [_cc(SNOMED, *enc_type)],
        "serviceType": _service_cc(v.c.service),
        "subject": {"reference": ctx.patients[v.p.key]},
        "participant": [
            {
                "type": [_cc(f"{THO}/v3-ParticipationType", "PPRF", "primary performer")],
                "period": period,
                "individual": {"reference": ctx.practitioners[v.c.key]},
            }
        ],
        "appointment": [{"reference": appointment}],
        "period": period,
    }
    if v.reason:
        res["reasonReference"] = [{"reference": ctx.conditions[(v.p.key, v.reason)]}]
    res["location"] = [{"location": {"reference": v.site}, "status": "completed"}]
    res["serviceProvider"] = {"reference": ctx.org}
    return ctx.b.add(res)


def _add_visit_observations(
    ctx: _Context, v: _Visit, encounter: str, obs_ids: Iterator[str], rng: random.Random
) -> list[tuple[str, str]]:
    """Vitals or questionnaire scores taken at the visit; returns summary phrases.

    On video visits the numbers are patient-reported from home devices, which
    is how telehealth practices chart them.
    """
    p, base = v.p, v.p.vitals
    patient, performer = ctx.patients[p.key], ctx.practitioners[v.c.key]
    when = v.start + dt.timedelta(minutes=5)
    observations: list[Resource] = []
    phrases: list[tuple[str, str]] = []

    def observe(key: str, value: float, phrase: tuple[str, str]) -> None:
        observations.append(_observation(next(obs_ids), patient, key, value, when, performer, encounter))
        phrases.append(phrase)

    if v.c.service == "behavioral-health":
        # Scores drift down as treatment works.
        for score, top in (("phq9", 27), ("gad7", 21)):
            if score in base:
                value = max(0, min(top, int(base[score]) - v.n + rng.randint(-1, 1)))
                observe(score, value, (score, str(value)))
    elif v.c.service != "remote-monitoring":  # RPM check-ins review home data instead
        if "systolic" in base:
            sys_v = base["systolic"] + rng.gauss(0, 6)
            dia_v = base["diastolic"] + rng.gauss(0, 4)
            observations.append(
                _blood_pressure(next(obs_ids), patient, sys_v, dia_v, when, performer, encounter)
            )
            phrases.append(("bp", f"{round(sys_v)}/{round(dia_v)} mmHg"))
            hr = base["hr"] + rng.gauss(0, 4)
            observe("hr", hr, ("hr", f"{round(hr)}/min"))
        # Children grow: earlier visits weigh less than the baseline.
        growth = 0.4 * (len(p.visits) - v.n) if p.age < 18 else 0
        weight = base["weight"] + rng.gauss(0, 0.6) - growth
        observe("weight", weight, ("weight", f"{round(weight, 1)} kg"))
        if "temp" in base:
            temp = base["temp"] + rng.gauss(0, 0.2)
            observe("temp", temp, ("temp", f"{round(temp, 1)} °C"))
        if "spo2" in base and p.age < 18:
            spo2 = min(100, base["spo2"] + rng.randint(-1, 1))
            observe("spo2", spo2, ("spo2", f"{spo2}%"))
    for obs in observations:
        ctx.b.add(obs)
    return phrases


def _add_after_visit_summary(
    ctx: _Context, v: _Visit, encounter: str, phrases: list[tuple[str, str]]
) -> None:
    language, text = _after_visit_summary(v.p, v.c, v.start, not v.in_person, v.reason, phrases)
    signed = _iso(v.end + dt.timedelta(minutes=15))
    ctx.b.add(
        {
            "resourceType": "DocumentReference",
            "id": ctx.b.id("doc", v.p.key, v.n),
            "status": "current",
            "docStatus": "final",
            "type": _cc(LOINC, "34133-9", "Summary of episode note", "After-visit summary"),
            "category": [_cc(US_CORE_DOC_CATEGORY, "clinical-note", "Clinical Note")],
            "subject": {"reference": ctx.patients[v.p.key]},
            "date": signed,
            "author": [{"reference": ctx.practitioners[v.c.key]}],
            "custodian": {"reference": ctx.org},
            "description": "After-visit summary",
            "content": [
                {
                    "attachment": {
                        "contentType": "text/plain",
                        "language": language,
                        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                        "title": f"After-visit summary {v.start.date().isoformat()}",
                        "creation": signed,
                    }
                }
            ],
            "context": {
                "encounter": [{"reference": encounter}],
                "period": {"start": _iso(v.start), "end": _iso(v.end)},
            },
        }
    )


def _build_history(ctx: _Context) -> None:
    """Past visits (fulfilled appointment, encounter, vitals, summary) and RPM data."""
    for p in PATIENTS:
        rng = ctx.b.rng(f"history:{p.key}")
        # One id sequence per patient for visit vitals and home readings alike.
        obs_ids = (ctx.b.id("obs", p.key, f"{n:03d}") for n in itertools.count(1))
        for v in _plan_visits(ctx, p, rng):
            appointment = _add_past_appointment(ctx, v, rng)
            encounter = _add_encounter(ctx, v, appointment)
            phrases = _add_visit_observations(ctx, v, encounter, obs_ids, rng)
            _add_after_visit_summary(ctx, v, encounter, phrases)
            ctx.visits.append((v, encounter))
        _build_home_readings(ctx, p, obs_ids)


# Statements: what a visit cost (CPT code, description, list price in USD) by service and mode.
CPT = "http://www.ama-assn.org/go/cpt"
VISIT_CHARGES = {
    ("primary-care", True): ("99213", "Video visit, established patient", 145.00),
    ("primary-care", False): ("99214", "Office visit, established patient", 210.00),
    ("behavioral-health", True): ("90834", "Psychotherapy by video, 45 minutes", 160.00),
    ("behavioral-health", False): ("90834", "Psychotherapy, 45 minutes", 160.00),
    ("cardiology-econsult", True): ("99451", "Specialist e-consult", 95.00),
    ("cardiology-econsult", False): ("99451", "Specialist e-consult", 95.00),
    ("remote-monitoring", True): ("99457", "Remote monitoring review, first 20 minutes", 52.00),
    ("remote-monitoring", False): ("99457", "Remote monitoring review, first 20 minutes", 52.00),
}
INSURANCE_SHARE = 0.8  # the plan pays this share of the list price; the patient owes the rest
STATEMENT_SYSTEM = f"{HC}/statement"
PAYMENT_TYPE = f"{THO}/payment-type"


def _usd(value: float) -> Resource:
    return {"value": round(value, 2), "currency": "USD"}


def _build_statements(ctx: _Context) -> None:
    """Statements (Invoices in USD) for the latest visits of about half the patients: the newest one
    still owed, the one before it paid by card (with its PaymentReconciliation and PaymentNotice),
    so the portal's bills page has something to pay and a receipt to show."""
    b = ctx.b
    latest: dict[str, list[tuple[Any, str]]] = {}
    for v, encounter in ctx.visits:
        latest.setdefault(v.p.key, []).append((v, encounter))
    for n, p in enumerate(PATIENTS, start=1):
        if b.rng(f"statement:{p.key}").random() >= 0.5 and n != 1:  # the first patient always has one
            continue
        visits = sorted(latest.get(p.key, []), key=lambda ve: ve[0].start)[-2:]
        for age, (v, encounter) in enumerate(reversed(visits)):
            code, text, price = VISIT_CHARGES[(v.c.service, not v.in_person)]
            lines: list[Resource] = [
                {
                    "sequence": 1,
                    "chargeItemCodeableConcept": _cc(
                        CPT, code, text, f"{text} ({v.start.date().isoformat()})"
                    ),
                    "priceComponent": [{"type": "base", "amount": _usd(price)}],
                }
            ]
            owed = price
            if p.insured:
                paid_by_plan = round(price * INSURANCE_SHARE, 2)
                owed = round(price - paid_by_plan, 2)
                lines.append(
                    {
                        "sequence": 2,
                        "chargeItemCodeableConcept": {"text": "Paid by Demo Health Plan"},
                        "priceComponent": [{"type": "deduction", "amount": _usd(paid_by_plan)}],
                    }
                )
            issued = min(v.end.date() + dt.timedelta(days=14), b.today)
            invoice_id = b.id("inv", p.key, v.n)
            invoice: Resource = {
                "resourceType": "Invoice",
                "id": invoice_id,
                "identifier": [{"system": STATEMENT_SYSTEM, "value": f"ST-{1000 + n:04d}-{v.n}"}],
                "status": "balanced" if age else "issued",
                "subject": {"reference": ctx.patients[p.key]},
                "recipient": {"reference": ctx.patients[p.subscriber or p.key]},
                "date": issued.isoformat(),
                "issuer": {"reference": ctx.org},
                "lineItem": lines,
                "totalNet": _usd(owed),
                "totalGross": _usd(owed),
                "paymentTerms": "Due within 30 days of the statement date.",
                "note": [{"text": f"For the visit of {v.start.date().isoformat()} ({encounter})."}],
            }
            b.add(invoice)
            if not age:
                continue
            paid_on = min(issued + dt.timedelta(days=5), b.today)
            receipt = b.add(
                {
                    "resourceType": "PaymentReconciliation",
                    "id": b.id("pay", p.key, v.n),
                    "extension": [
                        {"url": "urn:housecall:billing:card-last4", "valueString": "4242"},
                        {"url": "urn:housecall:billing:card-brand", "valueString": "Visa"},
                    ],
                    "status": "active",
                    "created": _iso(local_dt(paid_on, 19, 12)),
                    "outcome": "complete",
                    "disposition": "Card payment (Visa ending 4242) through the patient portal",
                    "paymentDate": paid_on.isoformat(),
                    "paymentAmount": _usd(owed),
                    "paymentIdentifier": {
                        "system": "urn:housecall:payments:local",
                        "value": f"ch_demo{p.key}{v.n}",
                    },
                    "detail": [
                        {
                            "type": _cc(PAYMENT_TYPE, "payment", "Payment"),
                            "request": {"reference": f"Invoice/{invoice_id}"},
                            "payee": {"reference": ctx.org},
                            "date": paid_on.isoformat(),
                            "amount": _usd(owed),
                        }
                    ],
                }
            )
            b.add(
                {
                    "resourceType": "PaymentNotice",
                    "id": b.id("paynotice", p.key, v.n),
                    "status": "active",
                    "request": {"reference": f"Invoice/{invoice_id}"},
                    "created": _iso(local_dt(paid_on, 19, 12)),
                    "payment": {"reference": receipt},
                    "paymentDate": paid_on.isoformat(),
                    "recipient": {"reference": ctx.org},
                    "amount": _usd(owed),
                }
            )


def _build_home_readings(ctx: _Context, p: PatientSpec, obs_ids: Iterator[str]) -> None:
    """RPM device readings every other morning for the last two weeks."""
    if not p.rpm:
        return
    b = ctx.b
    rng = b.rng(f"rpm:{p.key}")
    patient = ctx.patients[p.key]
    base = p.vitals
    spread = {"hr": 5, "weight": 0.5, "spo2": 1.2, "glucose": 22}
    for days_ago in range(13, 0, -2):
        when = local_dt(b.today - dt.timedelta(days=days_ago), 7, rng.randint(0, 50))
        for metric in p.rpm:
            if metric == "bp":
                obs = _blood_pressure(
                    next(obs_ids),
                    patient,
                    base["systolic"] + rng.gauss(0, 7),
                    base["diastolic"] + rng.gauss(0, 5),
                    when,
                    performer=patient,
                )
            elif metric == "steps":
                # The tracker syncs yesterday's 24-hour total; stamp it at day end.
                obs = _observation(
                    next(obs_ids),
                    patient,
                    "steps",
                    max(300, base["steps"] + rng.gauss(0, 1200)),
                    local_dt(when.date() - dt.timedelta(days=1), 23, 59),
                    performer=patient,
                )
            else:
                value = base[metric] + rng.gauss(0, spread[metric])
                if metric == "spo2":
                    value = min(100, value)
                obs = _observation(next(obs_ids), patient, metric, value, when, performer=patient)
            b.add(obs)


def _build_labs(ctx: _Context) -> None:
    """Lab panels ordered by each patient's conditions, at two time points."""
    b = ctx.b
    for p in PATIENTS:
        active = [c for c, _y, is_active in p.conditions if is_active]
        panels = list(dict.fromkeys(panel for cond in active for panel in PANELS_FOR_CONDITION.get(cond, ())))
        if not panels:
            continue
        rng = b.rng(f"labs:{p.key}")
        patient = ctx.patients[p.key]
        # Three draws over about a year, so the portal's trend charts have a line to draw; the
        # draw number is part of the ids, so the older draw added later is number 3.
        # The first patient with labs also has yesterday's draw of their first panel, not yet
        # reviewed: it waits in the primary-care pool's inbox and is not shown in the portal yet.
        fresh = not any(e["resource"]["resourceType"] == "Task" for e in b.entries)
        draws = ((3, 380), (1, 200), (2, 25), *(((4, 1),) if fresh else ()))
        for draw, days_ago in draws:
            drawn = local_dt(
                _weekday_on_or_before(b.today - dt.timedelta(days=days_ago)), 7, 30 + rng.randint(0, 25)
            )
            issued = drawn + dt.timedelta(hours=9)
            for panel in panels if draw != 4 else panels[:1]:
                (code, display), members = PANELS[panel]
                results = []
                for member in members:
                    typical = LAB_TYPICAL[member]
                    mean, sd = next((typical[c] for c in active if c in typical), typical[None])
                    obs = _observation(
                        b.id("lab", p.key, draw, member),
                        patient,
                        member,
                        max(0.1, rng.gauss(mean, sd)),
                        drawn,
                    )
                    obs["issued"] = _iso(issued)
                    results.append(b.add(obs))
                b.add(
                    {
                        "resourceType": "DiagnosticReport",
                        "id": b.id("dr", p.key, draw, panel),
                        "status": "final",
                        "category": [_cc(f"{THO}/v2-0074", "LAB", "Laboratory")],
                        "code": _cc(LOINC, code, display),
                        "subject": {"reference": patient},
                        "effectiveDateTime": _iso(drawn),
                        "issued": _iso(issued),
                        "performer": [{"reference": ctx.org}],
                        "resultsInterpreter": [{"reference": ctx.practitioners[p.pcp]}],
                        "result": [{"reference": r} for r in results],
                    }
                )
                if draw == 4:
                    b.add(
                        {
                            "resourceType": "Task",
                            "id": b.id("task", "review", p.key),
                            "status": "requested",
                            "intent": "order",
                            "priority": "routine",
                            "code": {"coding": [_coding(WORK, "result-review", "Result to review")]},
                            "description": f"Result: {display}",
                            "for": {"reference": patient},
                            "focus": {"reference": f"DiagnosticReport/{b.id('dr', p.key, draw, panel)}"},
                            "authoredOn": _iso(issued),
                            "performerType": [
                                {"coding": [_coding(POOL, ctx.services["primary-care"].split("/", 1)[1])]}
                            ],
                        }
                    )


def _build_medications(ctx: _Context) -> None:
    b = ctx.b
    for p in PATIENTS:
        for med_key, reason, prescriber in p.meds:
            m = MEDICATIONS[med_key]
            authored = local_dt(
                _weekday_on_or_before(
                    b.today - dt.timedelta(days=b.rng(f"rx:{p.key}:{med_key}").randint(20, 300))
                ),
                11,
                30,
            )
            dose: Resource = {"text": m.sig, "route": _cc(SNOMED, *m.route)}
            if m.as_needed:
                dose["asNeededBoolean"] = True
            else:
                dose["timing"] = {"repeat": {"frequency": m.per_day, "period": 1, "periodUnit": "d"}}
            unit = m.quantity[1]
            dose["doseAndRate"] = [
                {
                    "doseQuantity": {
                        "value": 2 if unit == "{inhaler}" else 1,
                        "unit": "puff" if unit == "{inhaler}" else "tablet",
                        "system": UCUM,
                        "code": "{puff}" if unit == "{inhaler}" else "{tbl}",
                    }
                }
            ]
            b.add(
                {
                    "resourceType": "MedicationRequest",
                    "id": b.id("rx", p.key, med_key),
                    "status": "active",
                    "intent": "order",
                    "category": [_cc(f"{THO}/medicationrequest-category", "community", "Community")],
                    "medicationCodeableConcept": _cc(RXNORM, m.rxnorm, m.display),
                    "subject": {"reference": ctx.patients[p.key]},
                    "authoredOn": _iso(authored),
                    "requester": {"reference": ctx.practitioners[prescriber]},
                    "reasonReference": [{"reference": ctx.conditions[(p.key, reason)]}],
                    "dosageInstruction": [dose],
                    "dispenseRequest": {
                        "numberOfRepeatsAllowed": m.refills,
                        "quantity": {
                            "value": m.quantity[0],
                            "unit": unit.strip("{}"),
                            "system": UCUM,
                            "code": unit,
                        },
                        "expectedSupplyDuration": {
                            "value": m.supply_days,
                            "unit": "days",
                            "system": UCUM,
                            "code": "d",
                        },
                    },
                }
            )


def _build_allergies(ctx: _Context) -> None:
    b = ctx.b
    for p in PATIENTS:
        for key in p.allergies:
            system, code, display, category, kind, criticality, reaction, text = ALLERGENS[key]
            res: Resource = {
                "resourceType": "AllergyIntolerance",
                "id": b.id("allergy", p.key, key),
                "clinicalStatus": _cc(f"{THO}/allergyintolerance-clinical", "active", "Active"),
                "verificationStatus": _cc(f"{THO}/allergyintolerance-verification", "confirmed", "Confirmed"),
            }
            if kind:
                res["type"] = kind
                res["category"] = [category]
                res["criticality"] = criticality
            res["code"] = _cc(system, code, display, text)
            res["patient"] = {"reference": ctx.patients[p.key]}
            res["recordedDate"] = _years_before(b.today, 1).isoformat()
            res["recorder"] = {"reference": ctx.practitioners[p.pcp]}
            if reaction:
                res["reaction"] = [
                    {
                        "manifestation": [_cc(SNOMED, *reaction)],
                        "severity": "severe" if criticality == "high" else "mild",
                    }
                ]
            b.add(res)


def _vaccines_for(p: PatientSpec, birth: dt.date, today: dt.date) -> list[tuple[str, dt.date]]:
    """A plausible US schedule, all in the past relative to `today`."""
    shots: list[tuple[str, dt.date]] = []
    if p.age < 18:
        first_birthday = _years_before(birth, -1)
        fourth_birthday = _years_before(birth, -4)
        shots += [
            ("mmr", first_birthday + dt.timedelta(days=10)),
            ("varicella", first_birthday + dt.timedelta(days=10)),
        ]
        if p.age >= 5:
            shots += [
                ("dtap", fourth_birthday + dt.timedelta(days=30)),
                ("ipv", fourth_birthday + dt.timedelta(days=30)),
            ]
    else:
        shots.append(("tdap", today - dt.timedelta(days=3 * 365 + 40)))
        shots.append(("covid", today - dt.timedelta(days=210)))
    if p.age >= 50:
        shots.append(("zoster", today - dt.timedelta(days=800)))
    if p.age >= 65:
        shots.append(("pcv20", today - dt.timedelta(days=400)))
    shots.append(("flu", today - dt.timedelta(days=75)))
    return shots


def _build_immunizations(ctx: _Context) -> None:
    b = ctx.b
    for p in PATIENTS:
        rng = b.rng(f"vax:{p.key}")
        birth = _birth_date(b, p.age, p.key)
        for key, day in _vaccines_for(p, birth, b.today):
            cvx, display = VACCINES[key]
            # Children are vaccinated in clinic; adults mostly at a pharmacy
            # and the record is reported to us.
            in_clinic = p.age < 18
            res: Resource = {
                "resourceType": "Immunization",
                "id": b.id("imm", p.key, key),
                "status": "completed",
                "vaccineCode": _cc(CVX, cvx, display),
                "patient": {"reference": ctx.patients[p.key]},
                "occurrenceDateTime": _iso(local_dt(_weekday_on_or_before(day), 10, rng.randint(0, 50))),
                "primarySource": in_clinic,
            }
            if in_clinic:
                res["location"] = {"reference": ctx.sites["burlington"]}
                res["lotNumber"] = f"L{rng.randint(100000, 999999)}"
                res["performer"] = [{"actor": {"reference": ctx.practitioners[p.pcp]}}]
            else:
                res["reportOrigin"] = _cc(f"{THO}/immunization-origin", "record", "Written Record")
            b.add(res)


def _span(res: Resource) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(res["start"]), dt.datetime.fromisoformat(res["end"])


def _overlaps(span: tuple[dt.datetime, dt.datetime], others: list[tuple[dt.datetime, dt.datetime]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in others)


def _build_upcoming(ctx: _Context) -> None:
    """Book future slots: the booked ones become `busy` and point back here."""
    b = ctx.b
    guardians = {r.key: r for r in RELATED_PEOPLE}
    for p in PATIENTS:
        rng = b.rng(f"upcoming:{p.key}")
        booked: list[tuple[dt.datetime, dt.datetime]] = []
        for n, clin_key in enumerate(p.upcoming, start=1):
            c = CLINICIAN_BY_KEY[clin_key]
            # Never double-book the patient across two clinicians' calendars.
            free = [
                s for s in ctx.slots[clin_key] if s["status"] == "free" and not _overlaps(_span(s), booked)
            ]
            slot = rng.choice(free)
            slot["status"] = "busy"
            booked.append(_span(slot))
            virtual = slot["appointmentType"]["coding"][0]["code"] == "VR"
            site = ctx.sites["virtual"] if virtual else ctx.sites[c.sites[0]]
            participants = [
                {"actor": {"reference": ctx.patients[p.key]}, "required": "required", "status": "accepted"},
                {
                    "actor": {"reference": ctx.practitioners[clin_key]},
                    "required": "required",
                    "status": "accepted",
                },
                {"actor": {"reference": site}, "required": "required", "status": "accepted"},
            ]
            # Minors attend with a parent, an elder with her caregiver (first listed).
            if p.guardians:
                participants.append(
                    {
                        "actor": {"reference": ctx.relatives[guardians[p.guardians[0]].key]},
                        "required": "required",
                        "status": "accepted",
                    }
                )
            reason = _reason(p, clin_key)
            appt: Resource = {
                "resourceType": "Appointment",
                "id": b.id("appt", p.key, f"next{n}"),
                "status": "booked",
                "serviceCategory": [_cc(f"{THO}/service-category", *SERVICES[c.service][1])],
                "serviceType": [_service_cc(c.service)],
                "appointmentType": _visit_mode(virtual),
                "description": f"{SERVICES[c.service][0]} with {c.family}",
                "start": slot["start"],
                "end": slot["end"],
                "minutesDuration": c.slot_minutes,
                "slot": [{"reference": f"Slot/{slot['id']}"}],
                "created": _iso(
                    local_dt(b.today - dt.timedelta(days=rng.randint(1, 10)), 14, 5 * rng.randint(0, 11))
                ),
                "comment": f"Join at {VISIT_URL}"
                if virtual
                else f"Please arrive 10 minutes early at {SITE_BY_KEY[c.sites[0]].name}.",
                "participant": participants,
            }
            if reason:
                appt["reasonReference"] = [{"reference": ctx.conditions[(p.key, reason)]}]
            b.add(appt)


def demo_bundle(seed: int = 2026, today: dt.date | None = None) -> dict:
    """Build the demo organization as one FHIR R4 transaction Bundle.

    Deterministic for a given (seed, today); see the module docstring for the
    id, reference, time-zone and licensure guarantees.
    """
    today = today or dt.date.today()
    b = _Builder(seed, today)
    ctx = _Context(b)
    _build_organizations(ctx)
    _build_pharmacies(ctx)
    _build_locations(ctx)
    _build_services(ctx)
    _build_clinicians(ctx)
    _build_schedules(ctx)
    _build_patients(ctx)
    _build_relatives(ctx)
    _build_coverage(ctx)
    _build_care_teams(ctx)
    _build_conditions(ctx)
    _build_allergies(ctx)
    _build_medications(ctx)
    _build_immunizations(ctx)
    _build_history(ctx)
    _build_labs(ctx)
    _build_statements(ctx)
    _build_upcoming(ctx)
    # Slots last: booking above decided which ones are busy.
    for c in CLINICIANS:
        for slot in ctx.slots[c.key]:
            b.add(slot)
    return {
        "resourceType": "Bundle",
        "id": b.id("bundle"),
        "meta": {"tag": [dict(DEMO_TAG)]},
        "type": "transaction",
        "entry": b.entries,
    }


def demo_summary(bundle: dict) -> dict[str, int]:
    """Number of entries per resource type, sorted by type name."""
    counts = Counter(e["resource"]["resourceType"] for e in bundle.get("entry", []))
    return dict(sorted(counts.items()))
