"""Plain-language names for common tests, by LOINC code (the lab's display name is the fallback).

The names are built per call so that ``_()`` translates them in the reader's language; the table is
small on purpose: the tests a primary-care patient sees most often.
"""

from __future__ import annotations

from typing import Any

from housecall.web.i18n import _

LOINC = "http://loinc.org"


def plain_names() -> dict[str, str]:
    return {
        "2339-0": _("Blood sugar (glucose)"),
        "2345-7": _("Blood sugar (glucose)"),
        "4548-4": _("Average blood sugar, last 3 months (A1c)"),
        "2160-0": _("Kidney function (creatinine)"),
        "33914-3": _("Kidney filtering rate (eGFR)"),
        "2823-3": _("Potassium"),
        "2951-2": _("Sodium"),
        "30934-4": _("Heart strain marker (BNP)"),
        "2093-3": _("Total cholesterol"),
        "2085-9": _("\u201cGood\u201d cholesterol (HDL)"),
        "13457-7": _("\u201cBad\u201d cholesterol (LDL)"),
        "2571-8": _("Triglycerides (blood fats)"),
        "51990-0": _("Basic blood chemistry"),
        "24331-1": _("Cholesterol tests"),
        "58410-2": _("Complete blood count"),
        "718-7": _("Hemoglobin (oxygen-carrying protein)"),
        "6690-2": _("White blood cells"),
        "777-3": _("Platelets (clotting cells)"),
        "3016-3": _("Thyroid (TSH)"),
        "1742-6": _("Liver enzyme (ALT)"),
        "8480-6": _("Blood pressure, top number (systolic)"),
        "8462-4": _("Blood pressure, bottom number (diastolic)"),
        "8867-4": _("Heart rate"),
        "29463-7": _("Weight"),
        "59408-5": _("Oxygen level"),
        "8310-5": _("Temperature"),
    }


def loinc_code(concept: dict[str, Any] | None) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == LOINC and coding.get("code"):
            return str(coding["code"])
    return None


def technical_name(concept: dict[str, Any] | None) -> str:
    concept = concept or {}
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    return ""


def plain_name(concept: dict[str, Any] | None, names: dict[str, str] | None = None) -> str:
    """The plain name of a test, else the lab's own name for it."""
    code = loinc_code(concept)
    table = names if names is not None else plain_names()
    return table.get(code or "", "") or technical_name(concept) or _("Test")
