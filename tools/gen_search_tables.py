#!/usr/bin/env python3
"""Generate the FHIR R4 search-parameter tables used by ``housecall.fhir.indexing``.

Inputs (read only here, never at run time):

* ``fhir-r4-definitions/search-parameters.json``  - every R4 SearchParameter (FHIRPath ``expression``)
* ``fhir-r4-definitions/profiles-resources.json`` - resource StructureDefinitions (element types)
* ``fhir-r4-definitions/profiles-types.json``     - data-type StructureDefinitions
* ``fhir-r4-definitions/compartmentdefinition-patient.json`` - the Patient compartment

Outputs (committed):

* ``src/housecall/fhir/indexing/_r4_search_params.py`` - the compiled table
* ``docs/search-parameters.md``                        - what is indexed, what is not, and why

Usage::

    .venv/bin/python tools/gen_search_tables.py [--fixtures DIR] [--check]

``--check`` regenerates in memory and exits 1 if the committed files differ (for CI).

How compilation works
---------------------
Each SearchParameter expression is split on `` | `` and only the parts that start with the
resource type being compiled are kept (a SearchParameter may have many ``base`` types). A part is
parsed into a chain of steps (a tiny subset of FHIRPath) and then *type-checked* against the
StructureDefinitions, which gives the JSON key of every step (choice elements ``value[x]`` are
expanded to ``valueQuantity``, ``valueCodeableConcept``...) and the FHIR type of every leaf. A leaf
type picks the extractor at run time, so the indexer never interprets FHIRPath
(https://hl7.org/fhir/R4/search.html#table, https://hl7.org/fhir/R4/searchparameter.html).

Supported FHIRPath subset: dotted element paths, ``ofType(T)``, ``as(T)``, ``(X as T)``,
``where(resolve() is T)``, ``where(field='literal')``, ``extension('url')``, ``first()``, ``[0]``,
``X.exists()`` and ``X.exists() and X != false`` (boolean token). Anything else is reported as
*unindexed* with the reason, in the table and in the generated documentation.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO.parent / "shared" / "fixtures"
OUT_TABLE = REPO / "src" / "housecall" / "fhir" / "indexing" / "_r4_search_params.py"
OUT_DOC = REPO / "docs" / "search-parameters.md"

FHIR_VERSION = "4.0.1"

#: Parameters the store answers from its own columns (resource id / last-updated), never indexed.
SKIPPED_CODES = frozenset({"_id", "_lastUpdated"})

#: Resource types the telehealth platform relies on most; every compilable parameter of these
#: types must be indexed (the generator fails otherwise).
PRIORITY_TYPES = (
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
)

#: FHIR leaf types each search-parameter type can index (https://hl7.org/fhir/R4/search.html).
COMPATIBLE: dict[str, frozenset[str]] = {
    "token": frozenset(
        {
            "Coding",
            "CodeableConcept",
            "Identifier",
            "ContactPoint",
            "boolean",
            "code",
            "string",
            "id",
            "uri",
            "url",
            "canonical",
            "oid",
            "uuid",
            "markdown",
        }
    ),
    "string": frozenset(
        {
            "string",
            "markdown",
            "code",
            "id",
            "uri",
            "url",
            "canonical",
            "HumanName",
            "Address",
        }
    ),
    "reference": frozenset({"Reference", "canonical", "uri", "url"}),
    "date": frozenset({"date", "dateTime", "instant", "Period", "Timing"}),
    "quantity": frozenset(
        {
            "Quantity",
            "SimpleQuantity",
            "MoneyQuantity",
            "Age",
            "Duration",
            "Distance",
            "Count",
            "Money",
            "Range",
        }
    ),
    "number": frozenset({"decimal", "integer", "positiveInt", "unsignedInt"}),
    "uri": frozenset({"uri", "url", "canonical", "oid", "uuid"}),
}

PRIMITIVES = frozenset(
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
FHIRPATH_SYSTEM = {"http://hl7.org/fhirpath/System.String": "string"}


class Uncompilable(Exception):
    """The expression (or part) uses FHIRPath this compiler does not support."""


# --------------------------------------------------------------------------------------------
# StructureDefinitions: element lookup with choice types and content references
# --------------------------------------------------------------------------------------------


@dataclass
class Structures:
    """Element definitions of every resource and data type, keyed by StructureDefinition id."""

    elements: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    resource_kind: dict[str, str] = field(default_factory=dict)  # type -> Resource|DomainResource
    excluded_types: dict[str, str] = field(default_factory=dict)  # SD id -> why not a type here

    @classmethod
    def load(cls, defs: Path) -> Structures:
        s = cls()
        for fname in ("profiles-types.json", "profiles-resources.json"):
            bundle = json.loads((defs / fname).read_text(encoding="utf-8"))
            for entry in bundle["entry"]:
                sd = entry["resource"]
                if sd.get("resourceType") != "StructureDefinition":
                    continue
                if sd.get("derivation") == "constraint":  # SimpleQuantity, MoneyQuantity
                    continue
                s.elements[sd["id"]] = {el["path"]: el for el in sd["snapshot"]["element"]}
                if sd.get("kind") != "resource":
                    continue
                if sd.get("abstract"):
                    continue
                if sd.get("version", FHIR_VERSION) != FHIR_VERSION:
                    s.excluded_types[sd["id"]] = f"FHIR {sd.get('version')} resource, not R4 4.0.1"
                    continue
                base = sd.get("baseDefinition", "").rsplit("/", 1)[-1]
                s.resource_kind[sd["id"]] = base
        return s

    def children(self, ctx: tuple[str, str], name: str) -> list[tuple[str, str, tuple[str, str] | None]]:
        """Resolve child ``name`` of the context element.

        Returns ``(json_key, fhir_type, child_context)`` alternatives: one for a plain element,
        one per type for a choice element ``name[x]`` (JSON key ``name`` + capitalised type).
        ``child_context`` is ``None`` for primitives.
        """
        sd, path = ctx
        els = self.elements[sd]
        el = els.get(f"{path}.{name}")
        if el is not None:
            if "contentReference" in el:
                target = el["contentReference"].lstrip("#")
                return [(name, "BackboneElement", (sd, target))]
            codes = {FHIRPATH_SYSTEM.get(t["code"], t["code"]) for t in el.get("type", [])}
            if len(codes) != 1:
                raise Uncompilable(f"element {path}.{name} has types {sorted(codes)}")
            (code,) = codes
            return [(name, code, self._ctx_for(sd, f"{path}.{name}", code))]
        el = els.get(f"{path}.{name}[x]")
        if el is not None:
            out = []
            for t in el.get("type", []):
                code = FHIRPATH_SYSTEM.get(t["code"], t["code"])
                out.append((name + code[0].upper() + code[1:], code, self._ctx_for(sd, "", code)))
            return out
        # Some published expressions use the JSON name of one choice alternative (US Core:
        # ``extension.where(...).valueDateTime``); accept it as ``value.ofType(dateTime)``.
        for epath, el in els.items():
            if epath.startswith(f"{path}.") and epath.endswith("[x]") and "." not in epath[len(path) + 1 :]:
                stem = epath[len(path) + 1 : -3]
                for t in el.get("type", []):
                    code = FHIRPATH_SYSTEM.get(t["code"], t["code"])
                    if name == stem + code[0].upper() + code[1:]:
                        return [(name, code, self._ctx_for(sd, "", code))]
        raise Uncompilable(f"no element {path}.{name}")

    def _ctx_for(self, sd: str, path: str, code: str) -> tuple[str, str] | None:
        if code in ("BackboneElement", "Element"):
            return (sd, path)
        if code in PRIMITIVES:
            return None
        if code in self.elements:
            return (code, code)
        raise Uncompilable(f"unknown type {code}")


# --------------------------------------------------------------------------------------------
# FHIRPath subset -> step chain
# --------------------------------------------------------------------------------------------

_IDENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[0\])?")
_OFTYPE = re.compile(r"(?:ofType|as)\(([A-Za-z]+)\)")
_RESOLVE_IS = re.compile(r"where\(resolve\(\) is ([A-Za-z]+)\)")
_WHERE_EQ = re.compile(r"where\(([A-Za-z]+) ?= ?'([^']*)'\)")
_EXTENSION = re.compile(r"extension\('([^']*)'\)")
_EXISTS_NOT_FALSE = re.compile(r"(\S+)\.exists\(\) and (\S+) != false")
_EXISTS = re.compile(r"(\S+)\.exists\(\)")


def _matching_paren(s: str, start: int) -> int:
    depth = 0
    quote = False
    for i in range(start, len(s)):
        c = s[i]
        if c == "'":
            quote = not quote
        elif quote:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
    raise Uncompilable(f"unbalanced parentheses in {s!r}")


def normalize_part(part: str) -> str:
    """Rewrite ``(X as T).y`` / ``(X).y`` / ``X as T`` into a plain dotted chain."""
    p = part.strip()
    while p.startswith("("):
        end = _matching_paren(p, 0)
        inner, rest = p[1:end].strip(), p[end + 1 :]
        m = re.fullmatch(r"(\S+) as ([A-Za-z]+)", inner)
        if m:
            inner = f"{m.group(1)}.as({m.group(2)})"
        p = inner + rest
    m = re.fullmatch(r"(\S+) as ([A-Za-z]+)", p)
    if m:
        p = f"{m.group(1)}.as({m.group(2)})"
    return p


def split_steps(p: str) -> list[str]:
    """Split on dots outside parentheses and quotes."""
    out: list[str] = []
    cur: list[str] = []
    depth, quote = 0, False
    for c in p:
        if c == "'":
            quote = not quote
        if not quote:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "." and depth == 0:
                out.append("".join(cur))
                cur = []
                continue
        cur.append(c)
    out.append("".join(cur))
    return out


@dataclass
class Branch:
    """One concrete JSON walk: keys with filters, the leaf FHIR type, optional target restriction."""

    steps: list[list[Any]]  # [key, [(field, value), ...], first]
    ftype: str
    ctx: tuple[str, str] | None
    restrict: str | None = None


def compile_part(s: Structures, base: str, part: str) -> list[Branch]:
    """Compile one ``|``-separated expression part for resource type ``base``."""
    chain = split_steps(normalize_part(part))
    head = chain[0]
    if head in (base, "Resource", "DomainResource"):
        chain = chain[1:]
        root_sd = head
    else:
        raise Uncompilable(f"part {part!r} does not start with {base}")
    branches = [Branch([], root_sd, (root_sd, root_sd))]
    for step in chain:
        if not step:
            raise Uncompilable(f"empty step in {part!r}")
        if m := _OFTYPE.fullmatch(step):
            t = m.group(1)
            branches = [b for b in branches if b.ftype == t]
            if not branches:
                raise Uncompilable(f"{step} matches no type in {part!r}")
            continue
        if m := _RESOLVE_IS.fullmatch(step):
            for b in branches:
                if b.ftype != "Reference":
                    raise Uncompilable(f"resolve() on {b.ftype} in {part!r}")
                b.restrict = m.group(1)
            continue
        if m := _WHERE_EQ.fullmatch(step):
            for b in branches:
                if not b.steps:
                    raise Uncompilable(f"where() on the resource in {part!r}")
                b.steps[-1][1].append((m.group(1), m.group(2)))
            continue
        if step == "first()":
            for b in branches:
                b.steps[-1][2] = True
            continue
        if m := _EXTENSION.fullmatch(step):
            branches = _descend(s, branches, "extension", part)
            for b in branches:
                b.steps[-1][1].append(("url", m.group(1)))
            continue
        if m := _IDENT.fullmatch(step):
            branches = _descend(s, branches, m.group(1), part)
            if m.group(2):
                for b in branches:
                    b.steps[-1][2] = True
            continue
        raise Uncompilable(f"unsupported FHIRPath step {step!r}")
    return branches


def _descend(s: Structures, branches: list[Branch], name: str, part: str) -> list[Branch]:
    """Navigate to child ``name`` from every branch.

    As in FHIRPath, navigating to a child a type does not have yields nothing: a branch (say the
    ``valueString`` alternative of ``value[x]``) without that child is dropped. It is an error only
    when no branch has the child.
    """
    out = []
    errors = []
    for b in branches:
        if b.ctx is None:
            errors.append(f"navigating into primitive {b.ftype} in {part!r}")
            continue
        try:
            kids = s.children(b.ctx, name)
        except Uncompilable as exc:
            errors.append(str(exc))
            continue
        for key, ftype, ctx in kids:
            # Copy the step lists so choice alternatives never share a filter list.
            steps = [[k, list(f), first] for k, f, first in b.steps]
            out.append(Branch([*steps, [key, [], False]], ftype, ctx, b.restrict))
    if not out:
        raise Uncompilable(errors[0] if errors else f"no element {name} in {part!r}")
    return out


# --------------------------------------------------------------------------------------------
# Compile every parameter of every resource type
# --------------------------------------------------------------------------------------------


@dataclass
class Compiled:
    code: str
    type: str
    targets: tuple[str, ...]
    indexed: bool
    reason: str  # why unindexed, or notes on dropped branches for indexed params
    expression: str
    branches: list[tuple[str, tuple[Any, ...], str, str | None]] = field(default_factory=list)
    exists: tuple[str, tuple[Any, ...]] | None = None  # (mode, (steps, ...))


def _steps_tuple(b: Branch) -> tuple[Any, ...]:
    return tuple((k, tuple(f), first) for k, f, first in b.steps)


def parts_for(base: str, expression: str, n_bases: int) -> list[str]:
    """Parts of a (possibly multi-base) expression that belong to ``base``."""
    parts = [p.strip() for p in split_union(expression)]
    mine = []
    for p in parts:
        head = split_steps(normalize_part(p))[0] if not _EXISTS_NOT_FALSE.fullmatch(p) else p
        head = re.split(r"[.( ]", head.lstrip("("), maxsplit=1)[0]
        if head == base or head in ("Resource", "DomainResource"):
            mine.append(p)
        elif n_bases == 1 and head and head[0].islower():
            # e.g. InsurancePlan "name | alias": FHIRPath relative to the resource itself.
            mine.append(f"{base}.{p}")
    return mine


def split_union(expr: str) -> list[str]:
    """Split on `` | `` outside parentheses."""
    out: list[str] = []
    cur: list[str] = []
    depth, quote = 0, False
    i = 0
    while i < len(expr):
        c = expr[i]
        if c == "'":
            quote = not quote
        if not quote:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "|" and depth == 0:
                out.append("".join(cur))
                cur = []
                i += 1
                continue
        cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def compile_param(s: Structures, base: str, sp: dict[str, Any]) -> Compiled:
    code, ptype = sp["code"], sp["type"]
    expr = sp.get("expression") or ""
    targets = tuple(sorted(sp.get("target", []))) if ptype == "reference" else ()
    c = Compiled(code, ptype, targets, False, "", "")
    if ptype == "composite":
        c.reason = "composite parameter (pairs of values from one element) is not indexed"
        c.expression = expr
        return c
    if ptype == "special":
        c.reason = "special parameter (e.g. geo-distance `near`) needs a dedicated implementation"
        c.expression = expr
        return c
    if not expr:
        c.reason = {
            "_text": "no FHIRPath expression: narrative full-text search is not supported",
            "_content": "no FHIRPath expression: whole-resource full-text search is not supported",
            "_query": "no FHIRPath expression: named queries are not supported",
        }.get(code, "no FHIRPath expression")
        return c
    n_bases = len(sp["base"])
    parts = parts_for(base, expr, n_bases) if base not in ("Resource", "DomainResource") else [expr]
    c.expression = " | ".join(parts)
    if not parts:
        c.reason = f"expression has no part for {base}"
        return c
    notes: list[str] = []
    try:
        for part in parts:
            if m := _EXISTS_NOT_FALSE.fullmatch(part.strip()):
                if m.group(1) != m.group(2) or ptype != "token":
                    raise Uncompilable(f"unsupported boolean expression {part!r}")
                c.exists = ("not_false", tuple(_steps_tuple(b) for b in compile_part(s, base, m.group(1))))
                continue
            if m := _EXISTS.fullmatch(part.strip()):
                if ptype != "token":
                    raise Uncompilable(f"exists() on a {ptype} parameter")
                c.exists = ("exists", tuple(_steps_tuple(b) for b in compile_part(s, base, m.group(1))))
                continue
            for b in compile_part(s, base, part):
                if b.ftype == "Resource":
                    raise Uncompilable(
                        f"`{part}` is an embedded resource, not a Reference: searching it needs "
                        "a chained search into the Bundle's first entry"
                    )
                if b.ftype not in COMPATIBLE[ptype]:
                    notes.append(f"`{b.steps[-1][0] if b.steps else base}` ({b.ftype}) cannot be a {ptype}")
                    continue
                c.branches.append((code, _steps_tuple(b), b.ftype, b.restrict))
    except Uncompilable as exc:
        c.branches = []
        c.exists = None
        c.reason = str(exc)
        return c
    if c.exists and c.branches:
        c.branches, c.exists = [], None
        c.reason = "mixes exists() with element paths"
        return c
    if not c.branches and not c.exists:
        c.reason = "; ".join(dict.fromkeys(notes)) or "no indexable element"
        return c
    c.indexed = True
    if notes:
        c.reason = "not indexed: " + "; ".join(dict.fromkeys(notes))
    return c


@dataclass
class Tables:
    structures: Structures
    params: dict[str, list[Compiled]]  # base (type, "Resource", "DomainResource") -> params
    compartment: dict[str, tuple[str, ...]]


def build(defs: Path) -> Tables:
    s = Structures.load(defs)
    sps = json.loads((defs / "search-parameters.json").read_text(encoding="utf-8"))
    params: dict[str, list[Compiled]] = defaultdict(list)
    for entry in sps["entry"]:
        sp = entry["resource"]
        if sp["code"] in SKIPPED_CODES:
            continue
        for base in sp["base"]:
            if base not in s.resource_kind and base not in ("Resource", "DomainResource"):
                continue
            params[base].append(compile_param(s, base, sp))
    for base in params:
        params[base].sort(key=lambda c: c.code)
        codes = [c.code for c in params[base]]
        dup = {x for x in codes if codes.count(x) > 1}
        if dup:
            raise SystemExit(f"duplicate search parameter codes on {base}: {dup}")
    cd = json.loads((defs / "compartmentdefinition-patient.json").read_text(encoding="utf-8"))
    compartment = {r["code"]: tuple(r["param"]) for r in cd["resource"] if r.get("param")}
    # The compartment is computed from reference rows, so every compartment param must be an
    # indexed reference parameter.
    for rtype, comp_codes in compartment.items():
        have = {c.code: c for c in params.get(rtype, [])}
        for code in comp_codes:
            cp = have.get(code)
            if cp is None or not cp.indexed or cp.type != "reference":
                raise SystemExit(f"compartment param {rtype}.{code} is not an indexed reference")
    for rtype in PRIORITY_TYPES:
        if rtype not in s.resource_kind:
            raise SystemExit(f"priority type {rtype} is not an R4 resource type")
        for c in params.get(rtype, []):
            if not c.indexed and c.type not in ("composite", "special"):
                raise SystemExit(f"priority param {rtype}.{c.code} could not be compiled: {c.reason}")
    return Tables(s, dict(params), compartment)


# --------------------------------------------------------------------------------------------
# Emit the Python table
# --------------------------------------------------------------------------------------------


def render_table(t: Tables, source_note: str) -> str:
    targets_index: dict[tuple[str, ...], int] = {(): 0}
    for plist in t.params.values():
        for c in plist:
            targets_index.setdefault(c.targets, len(targets_index))
    lines = [
        f'"""GENERATED by tools/gen_search_tables.py from FHIR R4 {FHIR_VERSION} definitions. Do not edit.',
        "",
        f"Source: {source_note}.",
        "Regenerate with ``.venv/bin/python tools/gen_search_tables.py``; see docs/search-parameters.md.",
        "",
        "Layout (read by housecall.fhir.indexing):",
        "",
        "* RESOURCE_TYPES: R4 resource type -> its base (``Resource`` or ``DomainResource``).",
        "* TARGETS: interned reference-target tuples.",
        "* PARAMS: base -> ((code, type, targets_index, indexed, reason), ...); the bases",
        "  ``Resource``/``DomainResource`` hold the params shared by every type (``_tag``...).",
        "* BRANCHES: base -> ((code, steps, leaf_type, restrict), ...); ``steps`` is",
        "  ((json_key, ((field, literal), ...), first_only), ...), ``restrict`` the resource type of",
        "  ``where(resolve() is T)`` or None.",
        "* EXISTS: base -> ((code, mode, (steps, ...)), ...); boolean token from ``exists()``;",
        "  mode ``exists`` or ``not_false``.",
        "* COMPARTMENT_PATIENT: resource type -> search params placing it in a Patient compartment.",
        '"""',
        "",
        "# ruff: noqa",
        "# fmt: off",
        "",
        f'FHIR_VERSION = "{FHIR_VERSION}"',
        "",
        "Step = tuple[str, tuple[tuple[str, str], ...], bool]",
        "Branch = tuple[str, tuple[Step, ...], str, str | None]",
        "ExistsRow = tuple[str, str, tuple[tuple[Step, ...], ...]]",
        "",
        "RESOURCE_TYPES: dict[str, str] = {",
    ]
    for rtype in sorted(t.structures.resource_kind):
        lines.append(f"    {rtype!r}: {t.structures.resource_kind[rtype]!r},")
    lines += ["}", "", "TARGETS: tuple[tuple[str, ...], ...] = ("]
    for tg in sorted(targets_index, key=targets_index.__getitem__):
        lines.append(f"    {tg!r},")
    lines += [")", "", "PARAMS: dict[str, tuple[tuple[str, str, int, bool, str], ...]] = {"]
    for base in sorted(t.params):
        lines.append(f"    {base!r}: (")
        for c in t.params[base]:
            lines.append(
                f"        ({c.code!r}, {c.type!r}, {targets_index[c.targets]}, {c.indexed!r}, {c.reason!r}),"
            )
        lines.append("    ),")
    lines += ["}", "", "BRANCHES: dict[str, tuple[Branch, ...]] = {"]
    for base in sorted(t.params):
        rows = [b for c in t.params[base] if c.indexed for b in c.branches]
        if not rows:
            continue
        lines.append(f"    {base!r}: (")
        for row in rows:
            lines.append(f"        {row!r},")
        lines.append("    ),")
    lines += ["}", "", "EXISTS: dict[str, tuple[ExistsRow, ...]] = {"]
    for base in sorted(t.params):
        rows2 = [(c.code, c.exists[0], c.exists[1]) for c in t.params[base] if c.indexed and c.exists]
        if rows2:
            lines.append(f"    {base!r}: (")
            for row2 in rows2:
                lines.append(f"        {row2!r},")
            lines.append("    ),")
    lines += ["}", "", "COMPARTMENT_PATIENT: dict[str, tuple[str, ...]] = {"]
    for rtype in sorted(t.compartment):
        lines.append(f"    {rtype!r}: {t.compartment[rtype]!r},")
    lines += ["}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Emit the documentation
# --------------------------------------------------------------------------------------------

TYPE_ORDER = ("token", "string", "reference", "date", "quantity", "number", "uri", "composite", "special")


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _params_of(t: Tables, rtype: str) -> list[Compiled]:
    common = list(t.params.get("Resource", []))
    if t.structures.resource_kind[rtype] == "DomainResource":
        common += t.params.get("DomainResource", [])
    return sorted(common + t.params.get(rtype, []), key=lambda c: c.code)


_DOC_INTRO = """\
# FHIR search parameters: what is indexed

<!-- GENERATED by tools/gen_search_tables.py; do not edit by hand. -->

Housecall indexes resources for [FHIR R4 search](https://hl7.org/fhir/R4/search.html) when they are
written. The table of parameters is generated from the FHIR R4 {version} `SearchParameter` definitions
by `tools/gen_search_tables.py` into `src/housecall/fhir/indexing/_r4_search_params.py`. That tool
compiles each FHIRPath `expression` into plain JSON paths, so no FHIRPath runs when a resource is
written. Regenerate with `.venv/bin/python tools/gen_search_tables.py` (`--check` tells whether the
committed files are stale).
"""

_DOC_ROWS = """\
## How values are indexed

`extract_index(resource)` returns one list of rows for each search-parameter type, with duplicates
removed, in a deterministic order. See [search.html](https://hl7.org/fhir/R4/search.html#ptypes) for
the search semantics.

* **token** `(param, system, code, text)`: one row per Coding (`system`, `code`). The text column is
  `normalize_string()` of the CodeableConcept's `text`, or of the Coding's `display` when there is no
  `text` (what `:text` matches). A CodeableConcept with only `text` gives `(None, None, text)`.
  An Identifier gives `(system, value, type.text)`. A ContactPoint gives `(None, value, None)` (token
  search on a ContactPoint matches its `value`). A boolean gives `(None, "true"/"false", None)`.
  A code/string/id/uri primitive gives `(None, value, None)`: the implicit code system of a `code`
  element is not recorded, so `system|code` searches on such parameters will not match.
* **string** `(param, normalize_string(v), v)`: a HumanName gives one row for each family, given,
  prefix, suffix and text; an Address one row for each line, city, district, state, postalCode,
  country and text; string/markdown one row. `normalize_string` is NFKD, combining marks removed,
  casefold, whitespace collapsed; the query side applies the same function.
* **reference** `(param, target_type, target_id, url)`: `Type/id` and `Type/id/_history/v` give the
  type and id with url None. An absolute `http(s)://.../Type/id[/_history/v]` gives the type and id,
  with url set to the full value. `urn:uuid:` and `urn:oid:` keep only the url (the store resolves
  `urn:uuid:` before indexing); `#contained` keeps the url and the contained resource's type.
  Canonicals and URIs keep only the url. For `where(resolve() is T)` a row is kept only when the
  target type is T. A parameter that is exactly another one restricted to a target type (47 of them,
  such as Observation's `patient` = `subject.where(resolve() is Patient)`,
  `indexing.SUBSET_ALIASES`) has no rows of its own: searches read the other parameter's rows with
  that target type. A Reference that has only `identifier` or `display` gives no row.
* **date** `(param, lo_us, hi_us)`: inclusive bounds in microseconds since 1970-01-01T00:00Z, from
  the precision of the value (`2020` covers the whole year). A value with no zone is taken as UTC.
  An open end of a Period is -2^62 or 2^62. A Timing gives one row per `event` and one for
  `repeat.boundsPeriod`. Age, Duration, Range and string alternatives are not dates.
* **quantity** `(param, value, system, code, unit)`: Quantity and its profiles (Age, Duration,
  Distance, Count, SimpleQuantity). Money gives `(value, "urn:iso:std:iso:4217", currency, None)`.
  A Range gives one row for `low` and one for `high`. SampledData is not indexed.
* **number** `(param, float(value))`: decimal, integer, positiveInt, unsignedInt.
* **uri** `(param, value)`: uri, url, canonical, oid, uuid.

Malformed values are skipped and never raise: a date that does not parse, a quantity whose `value`
is not a number, a Coding that is not an object. Rejecting bad input is the validator's job.

Known limits:

* `phonetic` is indexed with the same rows as `name`. There is no phonetic algorithm.
* `Reference.identifier` is not indexed, so the `:identifier` modifier has nothing to match.
* Token rows do not keep `Identifier.type` codings, so `:of-type` is not supported.
* Composite parameters (`code-value-quantity` and the like) are not indexed. Combine the parts
  instead, for example `code=...&value-quantity=...`.
* Contained resources are not indexed on their own.
"""

_DOC_COMPARTMENT = """\
## Patient compartment

`IndexRows.patients` holds the ids of the Patients whose
[compartment](https://hl7.org/fhir/R4/compartmentdefinition-patient.html) holds the resource. A
resource is in a Patient's compartment when one of the search parameters listed below holds a
*relative* reference `Patient/<id>`. A Patient is always in its own compartment (its `id`), and in
those of the Patients it links to (`link`). The store must resolve `urn:uuid:` references, and make
references to its own base URL relative, before it calls `extract_index`: an unresolved or absolute
reference names no local Patient.
"""


def render_doc(t: Tables) -> str:
    rtypes = sorted(t.structures.resource_kind)
    all_params = [(r, c) for r in rtypes for c in t.params.get(r, [])]
    shared = t.params.get("Resource", []) + t.params.get("DomainResource", [])
    n_idx = sum(c.indexed for _, c in all_params)
    prio = [(r, c) for r in PRIORITY_TYPES for c in t.params.get(r, [])]
    p_idx = sum(c.indexed for _, c in prio)
    excluded = ", ".join(f"`{k}` ({v})" for k, v in sorted(t.structures.excluded_types.items()))
    shared_list = ", ".join(f"`{c.code}`" + ("" if c.indexed else " (not indexed)") for c in shared)
    out: list[str] = [_DOC_INTRO.format(version=FHIR_VERSION)]
    w = out.append
    w("## Summary\n")
    w(f"* R4 resource types: **{len(rtypes)}**." + (f" Not included: {excluded}." if excluded else ""))
    w(
        f"* Type-specific parameters, counted once per resource type: **{len(all_params)}**; "
        f"**{n_idx}** indexed, **{len(all_params) - n_idx}** not."
    )
    w(
        f"* The {len(PRIORITY_TYPES)} resource types the platform needs most have **{len(prio)}** "
        f"parameters: **{p_idx}** indexed, **{len(prio) - p_idx}** not (composite or special only)."
    )
    w(
        f"* Shared by every type: {shared_list}. `_id` and `_lastUpdated` are left out on purpose: "
        "the store answers them from its own columns."
    )
    w(f"* The Patient compartment is defined for {len(t.compartment)} resource types (table at the end).\n")
    w(_DOC_ROWS)
    w("## Parameters that are not indexed, grouped by type\n")
    by_type: dict[str, list[tuple[str, Compiled]]] = defaultdict(list)
    for r, c in all_params:
        if not c.indexed:
            by_type[c.type].append((r, c))
    for c in shared:
        if not c.indexed:
            by_type[c.type].append(("(all)", c))
    for ptype in TYPE_ORDER:
        rows = by_type.get(ptype)
        if not rows:
            continue
        w(f"### {ptype} ({len(rows)})\n")
        if ptype == "composite":
            w("Composite parameters combine two values taken from the same element; none is indexed:\n")
            w(", ".join(sorted({f"{r}.`{c.code}`" for r, c in rows})) + "\n")
            continue
        w("| resource | param | priority | expression | reason |")
        w("|---|---|---|---|---|")
        for r, c in sorted(rows, key=lambda x: (x[0] not in PRIORITY_TYPES, x[0], x[1].code)):
            pr = "**yes**" if r in PRIORITY_TYPES else ""
            w(f"| {r} | `{c.code}` | {pr} | `{_md(c.expression) or '-'}` | {_md(c.reason)} |")
        w("")
    w("## Indexed parameters with branches left out\n")
    w(
        "These parameters are indexed, but some alternatives of their expression cannot hold a value of "
        "the parameter's type\n(for example `Observation.value.ofType(SampledData)` is not a quantity); "
        "those alternatives are left out.\n"
    )
    w("| resource | param | note |")
    w("|---|---|---|")
    for r, c in all_params:
        if c.indexed and c.reason:
            w(f"| {r} | `{c.code}` | {_md(c.reason)} |")
    w("")
    w("## Priority resource types: every parameter\n")
    w(
        "The resource types the telehealth platform needs most. Every compilable parameter of these "
        "types is indexed\n(the generator fails otherwise); a ✗ marks a composite or special parameter or "
        "`_text`/`_content`/`_query`, see the tables above.\n"
    )
    for r in PRIORITY_TYPES:
        w(f"### {r}\n")
        comp = t.compartment.get(r)
        where = ", ".join(f"`{x}`" for x in comp) if comp else "never"
        if r == "Patient":
            where = f"itself (its `id`), plus {where}"
        w(f"Patient compartment: {where}.\n")
        w("| param | type | indexed | expression | targets |")
        w("|---|---|---|---|---|")
        for c in _params_of(t, r):
            tg = ", ".join(c.targets) if len(c.targets) <= 8 else f"{len(c.targets)} types (any)"
            ok = "✓" if c.indexed else "✗"
            w(f"| `{c.code}` | {c.type} | {ok} | `{_md(c.expression) or '-'}` | {tg} |")
        w("")
    w("## Other resource types\n")
    w("Indexed type-specific parameters of the other resource types (unindexed ones are listed above).\n")
    for r in rtypes:
        if r in PRIORITY_TYPES:
            continue
        ps = t.params.get(r, [])
        idx = ", ".join(f"`{c.code}`" for c in ps if c.indexed) or "(only the shared parameters)"
        w(f"* **{r}**: {idx}")
    w("")
    w(_DOC_COMPARTMENT)
    w("| resource | params |")
    w("|---|---|")
    for r in sorted(t.compartment):
        w(f"| {r} | {', '.join(f'`{x}`' for x in t.compartment[r])} |")
    w("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--fixtures",
        type=Path,
        default=DEFAULT_FIXTURES,
        help="folder holding fhir-r4-definitions/ (default: ../shared/fixtures)",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed outputs are stale")
    args = ap.parse_args(argv)
    defs = args.fixtures / "fhir-r4-definitions"
    if not defs.is_dir():
        print(f"missing {defs}", file=sys.stderr)
        return 2
    t = build(defs)
    table = render_table(t, "search-parameters.json, profiles-*.json, compartmentdefinition-patient.json")
    doc = render_doc(t)
    stale = False
    for path, text in ((OUT_TABLE, table), (OUT_DOC, doc)):
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
                stale = True
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)} ({len(text)} bytes)")
    all_params = [c for r in t.structures.resource_kind for c in t.params.get(r, [])]
    print(
        f"{len(t.structures.resource_kind)} resource types; {len(all_params)} type-specific params: "
        f"{sum(c.indexed for c in all_params)} indexed, {sum(not c.indexed for c in all_params)} unindexed"
    )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
