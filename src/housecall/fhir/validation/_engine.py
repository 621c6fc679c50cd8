"""The validator's engine: table-driven recursive checks over parsed JSON.

Design (why it is fast): the generated table is turned, lazily and once per type, into
``_TypeSpec`` objects whose ``fields`` dict maps every JSON property name (``valueQuantity``,
``_birthDate``, ...) straight to a small tuple ``(mode, sub_type, choice_group)`` where ``mode``
packs the kind of value and whether it repeats.  Validating an object is then one dict lookup
per JSON property plus an ``int`` comparison chain whose first branches accept the common valid
values inline; no objects are created on the success path except the dotted path strings
handed to nested objects.  Issue objects and messages are only built for problems.  Every
regex is compiled once at import.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from housecall.fhir.jsonio import FhirDecimal


def _load_tables() -> dict[str, Any]:
    """The compiled R4 table shipped with the package (see tools/gen_validation_tables.py)."""
    package = __name__.rpartition(".")[0]
    data = resources.files(package).joinpath("_r4_tables.json").read_bytes()
    tables: dict[str, Any] = orjson.loads(data)  # read at every process start: orjson is 1.5x json
    return tables


TABLES: dict[str, Any] = _load_tables()
_TYPES: dict[str, dict[str, Any]] = TABLES["types"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a resource.

    ``path`` is a FHIRPath-like location built from JSON property names, rooted at the resource
    type, with array indexes in brackets: ``Questionnaire.item[0].item[1].linkId``,
    ``Observation.valueQuantity.value``, ``Patient._birthDate.extension[0].url``,
    ``Bundle.entry[3].resource.status``.  Choice elements keep their type suffix and primitive
    extensions their leading underscore, so a path always names the JSON property at fault.
    ``message`` is plain English.  ``code`` is an OperationOutcome ``issue-type`` code:
    ``structure`` (JSON shape: unknown element, wrong JSON type, array vs single value, null,
    empty object/array, conflicting choice types), ``required`` (missing required element),
    ``value`` (a primitive that does not match its R4 format or range), ``too-long``,
    ``invalid`` (unknown/unexpected resourceType), ``invariant`` (ext-1).
    """

    path: str
    message: str
    code: str


RESOURCE_TYPES: frozenset[str] = frozenset(TABLES["resource_types"])

# --- field kinds --------------------------------------------------------------------------
K_OBJECT = 1  # complex datatype or backbone element; sub = type name
K_RESOURCE = 2  # any resource (contained, Bundle.entry.resource, Parameters.parameter.resource)
K_PEXT = 3  # ``_name``: the id/extension holder of a primitive
# Primitive kinds are >= K_PRIMITIVE; each has a checker in _PRIMITIVE_CHECKS.
K_PRIMITIVE = 10
_PRIMITIVE_KIND: dict[str, int] = {
    name: K_PRIMITIVE + i for i, name in enumerate(sorted(TABLES["primitive_types"]))
}
K_REFERENCE = K_PRIMITIVE + len(_PRIMITIVE_KIND)  # Reference.reference: a string with a shape

# Modes of the inline fast path in check_object (see Field below).
M_OBJECT = K_OBJECT << 1
M_OBJECTS = K_OBJECT << 1 | 1
M_CODE = _PRIMITIVE_KIND["code"] << 1
M_URI = _PRIMITIVE_KIND["uri"] << 1
M_STRING = _PRIMITIVE_KIND["string"] << 1
M_REFERENCE = K_REFERENCE << 1
M_DATETIME = _PRIMITIVE_KIND["dateTime"] << 1
M_DECIMAL = _PRIMITIVE_KIND["decimal"] << 1
M_ID = _PRIMITIVE_KIND["id"] << 1

_MAX_STRING = 1024 * 1024  # string.value maxLength in the R4 string StructureDefinition
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

_RX: dict[str, re.Pattern[str]] = {k: re.compile(v) for k, v in TABLES["primitive_regex"].items()}
_RX_CODE = _RX["code"].fullmatch
_RX_ID = _RX["id"].fullmatch
_RX_DATE = _RX["date"].fullmatch
_RX_DATETIME = _RX["dateTime"].fullmatch
_RX_INSTANT = _RX["instant"].fullmatch
_RX_TIME = _RX["time"].fullmatch
_RX_OID = _RX["oid"].fullmatch
_RX_UUID = _RX["uuid"].fullmatch
# uri/url/canonical are ``\S*`` in XML-Schema terms: no space, tab, CR or LF anywhere.
_RX_XSD_SPACE = re.compile(r"[ \t\n\r]").search
# base64Binary's R4 regex, (\s*([0-9a-zA-Z\+/=]){4}\s*)+, says: only base64 characters and
# XML-Schema whitespace, and every whitespace-separated run is a non-empty multiple of four
# characters long.  Checking it that way (one character-class scan plus a split) is ~100x
# faster than running the grouped regex over a 700 KB inline image.
_RX_BASE64_CHARS = re.compile(r"[0-9A-Za-z+/=]+").fullmatch
_RX_BASE64_CHARS_WS = re.compile(r"[0-9A-Za-z+/= \t\n\r]+").fullmatch
# The literal-reference shapes R4 allows (references.html): [type]/[id](/_history/[vid]), a
# conditional reference [type]?[query] (for transactions), urn:uuid:, urn:oid:, "#" / "#id"
# (contained) and an absolute URL.  One regex, so a reference costs one match; its first
# branch captures the resource type, which must then be an R4 type.
_RX_REFERENCE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)"
    r"(?:/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?|\?[^ \t\n\r]*)"
    r"|urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+"
    r"|#[A-Za-z0-9\-.]{0,64}"
    r"|[A-Za-z][A-Za-z0-9+.\-]*://[^ \t\n\r]+"
).fullmatch

_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

CheckResult = tuple[str, str] | None  # (issue code, message) or None when valid


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "boolean"
    if isinstance(v, str):
        return "string"
    if isinstance(v, int | float | decimal.Decimal):
        return "number"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v: str) -> str:
    return repr(v if len(v) <= 60 else v[:57] + "...")


def _wrong_type(fhir_type: str, expected: str, v: object) -> tuple[str, str]:
    return ("structure", f"{fhir_type} must be a JSON {expected}, not {_json_type(v)}")


def _bad_format(fhir_type: str, v: str) -> tuple[str, str]:
    return ("value", f"{_show(v)} is not a valid {fhir_type}")


_EMPTY = ("value", "empty strings are not allowed (R4 JSON: a value is present or absent)")


def _valid_day(v: str) -> bool:
    """Regexes bound the day to 01-31; reject impossible calendar dates (2023-02-29, 04-31)."""
    if len(v) < 10 or v[8:10] <= "28":
        return True
    month, day = int(v[5:7]), int(v[8:10])
    if day > _DAYS_IN_MONTH[month]:
        return False
    if month == 2 and day == 29:
        year = int(v[:4])
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return True


def _check_string(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("string", "string", v)
    if not v:
        return _EMPTY
    if len(v) > _MAX_STRING:
        return ("too-long", f"string is longer than {_MAX_STRING} characters")
    return None


def _check_markdown(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("markdown", "string", v)
    return None if v else _EMPTY


def _check_code(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("code", "string", v)
    if _RX_CODE(v) is None:
        if not v:
            return _EMPTY
        return ("value", f"{_show(v)} is not a valid code (no leading, trailing or repeated whitespace)")
    return None


def _check_id(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("id", "string", v)
    if _RX_ID(v) is None:
        if not v:
            return _EMPTY
        return ("value", f"{_show(v)} is not a valid id (1-64 of A-Z a-z 0-9 - .)")
    return None


def _uri_like(name: str) -> Callable[[Any], CheckResult]:
    def check(v: Any) -> CheckResult:
        if type(v) is not str:
            return _wrong_type(name, "string", v)
        if not v:
            return _EMPTY
        if _RX_XSD_SPACE(v) is not None:
            return ("value", f"{_show(v)} is not a valid {name} (whitespace is not allowed)")
        return None

    return check


def _regex_string(name: str, fullmatch: Callable[[str], Any]) -> Callable[[Any], CheckResult]:
    def check(v: Any) -> CheckResult:
        if type(v) is not str:
            return _wrong_type(name, "string", v)
        if fullmatch(v) is None:
            return _EMPTY if not v else _bad_format(name, v)
        return None

    return check


def _dated(name: str, fullmatch: Callable[[str], Any]) -> Callable[[Any], CheckResult]:
    def check(v: Any) -> CheckResult:
        if type(v) is not str:
            return _wrong_type(name, "string", v)
        if fullmatch(v) is None:
            return _EMPTY if not v else _bad_format(name, v)
        if not _valid_day(v):
            return ("value", f"{_show(v)} is not a valid {name} (no such calendar day)")
        return None

    return check


def _check_boolean(v: Any) -> CheckResult:
    if v is True or v is False:
        return None
    return _wrong_type("boolean", "boolean (true/false)", v)


def _int_range(name: str, low: int) -> Callable[[Any], CheckResult]:
    def check(v: Any) -> CheckResult:
        if type(v) is not int:
            return _wrong_type(name, "integer number", v)
        if v < low or v > _INT_MAX:
            return ("value", f"{v} is outside the {name} range {low}..{_INT_MAX}")
        return None

    return check


def _check_decimal(v: Any) -> CheckResult:
    t = type(v)
    if t is float or t is FhirDecimal:
        return None if math.isfinite(v) else ("value", f"{v} is not a finite decimal")
    if t is int or t is decimal.Decimal:
        return None if t is int or v.is_finite() else ("value", f"{v} is not a finite decimal")
    return _wrong_type("decimal", "number", v)


def _check_base64(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("base64Binary", "string", v)
    if not v:
        return _EMPTY
    if _RX_BASE64_CHARS(v) is not None:
        if len(v) % 4 == 0:
            return None
    elif _RX_BASE64_CHARS_WS(v) is not None:
        runs = v.split()  # the characters are restricted, so this splits on XSD whitespace only
        if runs and all(len(run) % 4 == 0 for run in runs):
            return None
    return ("value", "not valid base64 (groups of four characters of A-Z a-z 0-9 + / =)")


def _check_xhtml(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("xhtml", "string", v)
    if not v.startswith("<div") or not v.rstrip().endswith(">"):
        return ("value", "Narrative.div must be an XHTML <div> element")
    return None


def _check_reference(v: Any) -> CheckResult:
    if type(v) is not str:
        return _wrong_type("string", "string", v)
    if not v:
        return _EMPTY
    m = _RX_REFERENCE(v)
    if m is not None:
        rtype = m.group("type")
        if rtype is None or rtype in RESOURCE_TYPES:
            return None
        return ("value", f"reference {_show(v)} names {rtype!r}, which is not an R4 resource type")
    return (
        "value",
        f"reference {_show(v)} is not a literal reference "
        "([type]/[id], an absolute URL, urn:uuid:, urn:oid: or #[id])",
    )


_PRIMITIVE_CHECKS_BY_NAME: dict[str, Callable[[Any], CheckResult]] = {
    "base64Binary": _check_base64,
    "boolean": _check_boolean,
    "canonical": _uri_like("canonical"),
    "code": _check_code,
    "date": _dated("date", _RX_DATE),
    "dateTime": _dated("dateTime", _RX_DATETIME),
    "decimal": _check_decimal,
    "id": _check_id,
    "instant": _dated("instant", _RX_INSTANT),
    "integer": _int_range("integer", _INT_MIN),
    "markdown": _check_markdown,
    "oid": _regex_string("oid", _RX_OID),
    "positiveInt": _int_range("positiveInt", 1),
    "string": _check_string,
    "time": _regex_string("time", _RX_TIME),
    "unsignedInt": _int_range("unsignedInt", 0),
    "uri": _uri_like("uri"),
    "url": _uri_like("url"),
    "uuid": _regex_string("uuid", _RX_UUID),
    "xhtml": _check_xhtml,
}
if set(_PRIMITIVE_CHECKS_BY_NAME) != set(_PRIMITIVE_KIND):  # the table gained a primitive type
    raise RuntimeError("every primitive type in _r4_tables.json needs a checker")
# Indexed by kind for the hot loop (list indexing beats a dict lookup).
_PRIMITIVE_CHECKS: list[Callable[[Any], CheckResult] | None] = [None] * (K_REFERENCE + 1)
for _name, _kind in _PRIMITIVE_KIND.items():
    _PRIMITIVE_CHECKS[_kind] = _PRIMITIVE_CHECKS_BY_NAME[_name]
_PRIMITIVE_CHECKS[K_REFERENCE] = _check_reference


# --- compiled type specs -------------------------------------------------------------------
# A compiled field: (mode, sub type name, choice group), where mode = kind << 1 | repeats, so
# the hot loop can branch on one int.
Field = tuple[int, str, str | None]


def pack_mode(kind: int, repeats: bool) -> int:
    """Pack a field kind and its repetition into the single int the hot loop dispatches on."""
    return kind << 1 | int(repeats)


class _TypeSpec:
    """Runtime form of one table entry (a resource, datatype or backbone element)."""

    __slots__ = (
        "fields",
        "has_post_checks",
        "is_extension",
        "is_resource",
        "name",
        "required",
        "required_groups",
    )

    def __init__(self, name: str) -> None:
        raw = _TYPES[name]
        chain = []
        spec: dict[str, Any] | None = raw
        while spec is not None:
            chain.append(spec)
            spec = _TYPES[spec["base"]] if spec["base"] else None
        merged: dict[str, list[Any]] = {}
        for level in reversed(chain):
            merged.update(level["fields"])

        self.name = name
        self.is_resource = name in RESOURCE_TYPES
        self.is_extension = name == "Extension"
        fields: dict[str, Field] = {}
        required: list[tuple[str, bool]] = []
        groups: dict[str, list[str]] = {}
        required_groups: set[str] = set()
        for json_name, (fhir_type, many, req, group, _targets) in merged.items():
            repeats = bool(many)
            if fhir_type in _PRIMITIVE_KIND:
                kind = _PRIMITIVE_KIND[fhir_type]
                if name == "Reference" and json_name == "reference":
                    kind = K_REFERENCE
                fields[json_name] = (pack_mode(kind, repeats), fhir_type, group)
                fields["_" + json_name] = (pack_mode(K_PEXT, repeats), "Element", None)
            elif fhir_type == "Resource":
                fields[json_name] = (pack_mode(K_RESOURCE, repeats), fhir_type, group)
            else:
                fields[json_name] = (pack_mode(K_OBJECT, repeats), fhir_type, group)
            if group is not None:
                groups.setdefault(group, []).append(json_name)
                if req:
                    required_groups.add(group)
            elif req:
                required.append((json_name, fhir_type in _PRIMITIVE_KIND))
        self.fields = fields
        self.required = tuple(required)
        self.required_groups = tuple((g, tuple(groups[g])) for g in sorted(required_groups))
        # Most datatypes have nothing to check once their properties are done; one flag lets
        # check_object skip three loops/tests per object for them.
        self.has_post_checks = bool(self.required or self.required_groups or self.is_extension)


class _SpecCache(dict[str, _TypeSpec]):
    """Compiles a type's spec on first use, so importing the package stays cheap."""

    def __missing__(self, name: str) -> _TypeSpec:
        spec = _TypeSpec(name)
        self[name] = spec
        return spec


_SPECS = _SpecCache()


# --- the walk ------------------------------------------------------------------------------
def _has_extension(holder: Any) -> bool:
    """A ``_name`` object that carries extensions stands in for a missing primitive value."""
    return type(holder) is dict and bool(holder.get("extension"))


def _comments_ok(v: Any) -> bool:
    # fhir_comments (a DSTU2 leftover some examples still carry) is tolerated as fhir.resources
    # does: a string or a list of strings, and otherwise ignored.
    return type(v) is str or (type(v) is list and all(type(c) is str for c in v))


def check_resource(res: Any, path: str, out: list[Issue], expected: str | None = None) -> None:
    """Validate ``res`` as a whole resource (its ``resourceType`` picks the definition)."""
    if type(res) is not dict:
        out.append(Issue(path, f"a resource must be a JSON object, not {_json_type(res)}", "structure"))
        return
    rt = res.get("resourceType")
    if rt is None:
        out.append(Issue(f"{path}.resourceType", "missing resourceType", "required"))
        return
    if type(rt) is not str or rt not in RESOURCE_TYPES:
        shown = _show(rt) if type(rt) is str else _json_type(rt)
        out.append(Issue(f"{path}.resourceType", f"{shown} is not an R4 resource type", "invalid"))
        return
    if expected is not None and rt != expected:
        out.append(Issue(f"{path}.resourceType", f"resourceType is {rt!r}, expected {expected!r}", "invalid"))
        return
    check_object(res, _SPECS[rt], path, out)


def check_object(obj: dict[str, Any], spec: _TypeSpec, path: str, out: list[Issue]) -> None:
    """Validate one JSON object against ``spec``; append problems to ``out``.

    The loop has an inline fast path for the value shapes that make up ~95% of real
    resources (a single object, an array of objects, and valid code / uri / string /
    Reference.reference / dateTime / decimal / id values); anything else -- other types, and
    every value that is about to fail -- goes through ``_check_value``, which holds the
    complete rules and builds the messages.
    """
    if not obj:
        out.append(Issue(path, "empty objects are not allowed", "structure"))
        # fall through: the required-element checks below name what is missing
    fields = spec.fields
    specs = _SPECS
    chosen: dict[str, str] | None = None  # choice group -> the JSON name used
    for key, val in obj.items():
        try:
            mode, sub, group = fields[key]
        except KeyError:
            if (key == "resourceType" and spec.is_resource) or (key == "fhir_comments" and _comments_ok(val)):
                continue  # resourceType is checked by check_resource
            out.append(Issue(f"{path}.{key}", f"unknown element {key!r} in {spec.name}", "structure"))
            continue
        if group is not None:
            if chosen is None:
                chosen = {group: key}
            elif group in chosen:
                out.append(
                    Issue(
                        f"{path}.{key}",
                        f"{group}[x] allows one type, but both {chosen[group]!r} and {key!r} are present",
                        "structure",
                    )
                )
            else:
                chosen[group] = key
        # --- fast path: valid common values `continue`; everything else falls through ---
        if mode == M_OBJECT:
            if type(val) is dict:
                check_object(val, specs[sub], f"{path}.{key}", out)
                continue
        elif mode == M_CODE:
            if type(val) is str and _RX_CODE(val) is not None:
                continue
        elif mode == M_URI:
            if type(val) is str and val and _RX_XSD_SPACE(val) is None:
                continue
        elif mode == M_STRING:
            if type(val) is str and val and len(val) <= _MAX_STRING:
                continue
        elif mode == M_OBJECTS:
            if type(val) is list and val:
                item_spec = specs[sub]
                for i, v in enumerate(val):
                    if type(v) is dict:
                        check_object(v, item_spec, f"{path}.{key}[{i}]", out)
                    else:
                        out.append(_not_object(f"{path}.{key}[{i}]", sub, v, True))
                continue
        elif mode == M_REFERENCE:
            if type(val) is str and _check_reference(val) is None:
                continue
        elif mode == M_DATETIME:
            if (
                type(val) is str
                and _RX_DATETIME(val) is not None
                and (len(val) < 10 or val[8:10] <= "28" or _valid_day(val))
            ):
                continue
        elif mode == M_DECIMAL:
            t = type(val)
            if t is int or ((t is float or t is FhirDecimal) and math.isfinite(val)):
                continue
        elif mode == M_ID and type(val) is str and _RX_ID(val) is not None:
            continue
        _check_value(obj, key, val, mode >> 1, sub, mode & 1, path, out)

    if not spec.has_post_checks:
        return
    for name, is_primitive in spec.required:
        if name in obj:
            continue
        if is_primitive and _has_extension(obj.get("_" + name)):
            continue  # R4 allows an extension in place of a required primitive's value
        out.append(Issue(f"{path}.{name}", f"missing required element {name!r}", "required"))
    for group, names in spec.required_groups:
        if chosen is None or group not in chosen:
            if any(_has_extension(obj.get("_" + n)) for n in names):
                continue
            out.append(Issue(f"{path}.{group}[x]", f"missing required element {group}[x]", "required"))
    if spec.is_extension:
        has_value = chosen is not None
        has_extensions = "extension" in obj
        if has_value == has_extensions:
            # ext-1 is an invariant, but a structural one: an extension carries either a value
            # or nested extensions (R4 extensibility.html).
            out.append(
                Issue(
                    path,
                    "an extension must have either a value[x] or nested extensions, not "
                    + ("both" if has_value else "neither"),
                    "invariant",
                )
            )


def _check_value(
    obj: dict[str, Any], key: str, val: Any, kind: int, sub: str, many: int, path: str, out: list[Issue]
) -> None:
    """The complete rules for one property value (every kind, arrays, nulls, messages)."""
    if val is None:
        out.append(Issue(f"{path}.{key}", "null is not allowed here", "structure"))
        return
    checks = _PRIMITIVE_CHECKS
    if many:
        if type(val) is not list:
            out.append(Issue(f"{path}.{key}", f"{key!r} repeats, so it must be a JSON array", "structure"))
            return
        if not val:
            out.append(Issue(f"{path}.{key}", "empty arrays are not allowed", "structure"))
            return
        if kind >= K_PRIMITIVE:
            check = checks[kind]
            for i, v in enumerate(val):
                if v is None:
                    if not _null_slot_ok(obj, "_" + key, i):
                        out.append(Issue(f"{path}.{key}[{i}]", _NULL_SLOT, "structure"))
                    continue
                r = check(v)  # type: ignore[misc]
                if r is not None:
                    out.append(Issue(f"{path}.{key}[{i}]", r[1], r[0]))
        elif kind == K_OBJECT:
            sspec = _SPECS[sub]
            for i, v in enumerate(val):
                if type(v) is dict:
                    check_object(v, sspec, f"{path}.{key}[{i}]", out)
                else:
                    out.append(_not_object(f"{path}.{key}[{i}]", sub, v, True))
        elif kind == K_RESOURCE:
            for i, v in enumerate(val):
                check_resource(v, f"{path}.{key}[{i}]", out)
        else:  # K_PEXT over a primitive array
            base = obj.get(key[1:])
            if type(base) is list and len(base) != len(val):
                out.append(
                    Issue(
                        f"{path}.{key}",
                        f"{key!r} must have as many entries as {key[1:]!r} ({len(val)} vs {len(base)})",
                        "structure",
                    )
                )
            espec = _SPECS["Element"]
            for i, v in enumerate(val):
                if v is None:
                    if not _null_slot_ok(obj, key[1:], i):
                        out.append(Issue(f"{path}.{key}[{i}]", _NULL_SLOT, "structure"))
                elif type(v) is dict:
                    check_object(v, espec, f"{path}.{key}[{i}]", out)
                else:
                    out.append(_not_object(f"{path}.{key}[{i}]", "primitive extension", v, True))
    elif kind >= K_PRIMITIVE:
        r = checks[kind](val)  # type: ignore[misc]
        if r is not None:
            if type(val) is list:
                r = ("structure", f"{key!r} does not repeat, so it must not be a JSON array")
            out.append(Issue(f"{path}.{key}", r[1], r[0]))
    elif type(val) is dict:
        if kind == K_RESOURCE:
            check_resource(val, f"{path}.{key}", out)
        else:
            check_object(val, _SPECS[sub], f"{path}.{key}", out)
    else:
        out.append(_not_object(f"{path}.{key}", sub, val, False))


_NULL_SLOT = "null is only allowed in a primitive array when the matching '_' entry has content"


def _null_slot_ok(obj: dict[str, Any], other_key: str, i: int) -> bool:
    other = obj.get(other_key)
    return type(other) is list and i < len(other) and other[i] is not None


def _not_object(path: str, type_name: str, v: object, in_array: bool) -> Issue:
    if type(v) is list and not in_array:
        name = path.rsplit(".", 1)[-1]
        return Issue(path, f"{name!r} does not repeat, so it must not be a JSON array", "structure")
    return Issue(path, f"{type_name} must be a JSON object, not {_json_type(v)}", "structure")
