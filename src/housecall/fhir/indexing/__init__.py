"""Search-index extraction for FHIR R4 resources, run on every write.

This module turns a resource (a JSON ``dict``) into the rows the SQL search layer stores, one list
per search-parameter type (https://hl7.org/fhir/R4/search.html#ptypes), plus the set of Patients
whose compartment holds the resource
(https://hl7.org/fhir/R4/compartmentdefinition-patient.html).

Public contract (the SQL layer is written against exactly this):

* :class:`SearchParam` / :func:`search_params` - the search-parameter registry of each type.
* :class:`IndexRows` / :func:`extract_index` - the rows of one resource.
* :func:`normalize_string` - string normalisation shared by the index and the query side.
* :func:`date_bounds` - a FHIR date/dateTime/instant (or partial) as inclusive µs bounds in UTC.

Design: the FHIRPath expressions of the R4 SearchParameters are compiled ahead of time by
``tools/gen_search_tables.py`` into ``_r4_search_params.py`` (JSON key paths + the FHIR type of the
leaf). Nothing here interprets FHIRPath; at import the table becomes, for each resource type, a
dict from *top-level JSON key* to the branches that start there, so ``extract_index`` only visits
the keys the resource actually has, and each leaf goes to an extractor chosen by
(parameter type, FHIR type) when the table is loaded.

What the caller must know:

* ``urn:uuid:`` references (transaction bundles) must be rewritten to ``Type/id`` *before*
  ``extract_index`` is called; otherwise they are indexed by url only and name no Patient.
* Compartment membership (``IndexRows.patients``) only counts *relative* references
  (``Patient/123``). References to the store's own base URL should be made relative first;
  absolute references to other servers never put a resource into a local compartment.
* ``_id`` and ``_lastUpdated`` are not in the registry; the store answers them from its columns.
* Malformed values (a date that does not parse, a non-numeric quantity) are skipped, never raised:
  validation happens before indexing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from housecall.fhir.jsonio import FhirDecimal

from . import _r4_search_params as _table

__all__ = [
    "SUBSET_ALIASES",
    "UNION_ALIASES",
    "IndexRows",
    "SearchParam",
    "date_bounds",
    "extract_index",
    "index_params",
    "normalize_string",
    "search_params",
]

#: Sentinels for the open ends of a Period (https://hl7.org/fhir/R4/search.html#date):
#: far outside any real date (year 9999 is ~2.5e17 µs) and still a signed 64-bit integer.
DATE_MIN_US = -(2**62)
DATE_MAX_US = 2**62


# ----------------------------------------------------------------------------------------------
# Public types
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type.

    ``targets`` lists the resource types a reference parameter may point to; it is the empty
    tuple for every other parameter type. ``indexed`` is False when the FHIRPath expression could
    not be compiled (composite and special parameters, ``_text``/``_content``/``_query``,
    ``Bundle.composition``/``message``); those are listed in docs/search-parameters.md and a query
    on them should be refused (or the parameter ignored, per the client's ``handling`` preference).
    """

    code: str
    type: str
    targets: tuple[str, ...]
    indexed: bool


@dataclass(slots=True)
class IndexRows:
    """Index rows of one resource; every list is de-duplicated and in a deterministic order.

    * ``token``: ``(param, system, code, text)``; ``text`` is already ``normalize_string``-ed
      (CodeableConcept.text, else Coding.display; Identifier.type.text) for ``:text``
    * ``string``: ``(param, normalize_string(value), value)``
    * ``reference``: ``(param, target_type, target_id, url)``
    * ``date``: ``(param, lo_us, hi_us)`` inclusive, µs since 1970-01-01T00:00Z
    * ``quantity``: ``(param, value, system, code, unit)``
    * ``number``: ``(param, value)``
    * ``uri``: ``(param, value)``
    * ``patients``: ids of the Patients whose compartment holds the resource
    """

    token: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    string: list[tuple[str, str, str]] = field(default_factory=list)
    reference: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    date: list[tuple[str, int, int]] = field(default_factory=list)
    quantity: list[tuple[str, float, str | None, str | None, str | None]] = field(default_factory=list)
    number: list[tuple[str, float]] = field(default_factory=list)
    uri: list[tuple[str, str]] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)


# What a token row's ``date_order`` holds for a resource without a ``date`` (last in that order).
NO_DATE_ORDER = 2**63 - 1


def date_order(rows: IndexRows) -> int:
    """The sort key token rows carry (``schema.sp_token``): minus the latest instant of the
    resource's ``date`` parameter, so that ascending order is ``_sort=-date``'s order."""
    latest = max((hi for param, _lo, hi in rows.date if param == "date"), default=None)
    return NO_DATE_ORDER if latest is None else -latest


# ----------------------------------------------------------------------------------------------
# normalize_string / date_bounds
# ----------------------------------------------------------------------------------------------


def normalize_string(value: str) -> str:
    """Normalise a string for case- and accent-insensitive matching.

    NFKD decomposition, combining marks removed, ``casefold()``, runs of whitespace collapsed to
    one space and the ends stripped. FHIR string search is "case-insensitive and accent-insensitive"
    and matches on a prefix (https://hl7.org/fhir/R4/search.html#string); the query side must
    apply the same function before its ``LIKE 'prefix%'``.
    """
    if value.isascii():  # NFKD is the identity on ASCII: skip the Unicode work (the common case)
        return " ".join(value.casefold().split())
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


# YYYY[-MM[-DD[Thh:mm[:ss[.f+]][zone]]]]; minute precision is accepted because search values
# may be given that way (https://hl7.org/fhir/R4/search.html#date), resource values never are.
_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_US_PER_DAY = 86_400_000_000


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def date_bounds(value: str) -> tuple[int, int]:
    """Inclusive UTC bounds, in µs since 1970-01-01T00:00Z, of a FHIR date/dateTime/instant.

    The implicit range follows the precision (https://hl7.org/fhir/R4/search.html#date):
    ``"2020"`` covers the whole year, ``"2020-03"`` the month, ``"2020-03-04"`` the day,
    ``"...T10:00"`` the minute, ``"...T10:00:00"`` the second, ``"...T10:00:00.5"`` 100 ms;
    digits beyond µs are truncated. A value without a zone is taken as UTC. Leap second ``:60``
    is accepted. Raises ``ValueError`` for anything malformed (bad format, month 13, Feb 30,
    hour 24, offset beyond ±14:00, year 0000).
    """
    m = _DATE_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"malformed FHIR date: {value!r}")
    ys, mos, ds, hs, mis, ss, frac, zone = m.groups()
    y = int(ys)
    if y == 0:
        raise ValueError(f"malformed FHIR date (year 0000): {value!r}")
    if mos is None:
        lo_day = _days_from_civil(y, 1, 1)
        return lo_day * _US_PER_DAY, _days_from_civil(y + 1, 1, 1) * _US_PER_DAY - 1
    mo = int(mos)
    if not 1 <= mo <= 12:
        raise ValueError(f"malformed FHIR date (month): {value!r}")
    if ds is None:
        nxt = _days_from_civil(y + 1, 1, 1) if mo == 12 else _days_from_civil(y, mo + 1, 1)
        return _days_from_civil(y, mo, 1) * _US_PER_DAY, nxt * _US_PER_DAY - 1
    d = int(ds)
    dim = _DAYS_IN_MONTH[mo]
    if mo == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        dim = 29
    if not 1 <= d <= dim:
        raise ValueError(f"malformed FHIR date (day): {value!r}")
    day_us = _days_from_civil(y, mo, d) * _US_PER_DAY
    if hs is None:
        return day_us, day_us + _US_PER_DAY - 1
    hh, mi = int(hs), int(mis)
    if hh > 23 or mi > 59:
        raise ValueError(f"malformed FHIR time: {value!r}")
    lo = day_us + (hh * 3600 + mi * 60) * 1_000_000
    if ss is None:
        width = 60_000_000
    else:
        sec = int(ss)
        if sec > 60:
            raise ValueError(f"malformed FHIR time (seconds): {value!r}")
        lo += sec * 1_000_000
        if frac is None:
            width = 1_000_000
        elif len(frac) <= 6:
            lo += int(frac.ljust(6, "0"))
            width = 10 ** (6 - len(frac))
        else:
            lo += int(frac[:6])
            width = 1
    if zone is not None and zone != "Z":
        oh, om = int(zone[1:3]), int(zone[4:6])
        if om > 59 or oh > 14 or (oh == 14 and om):
            raise ValueError(f"malformed FHIR time zone: {value!r}")
        offset = (oh * 3600 + om * 60) * 1_000_000
        lo = lo - offset if zone[0] == "+" else lo + offset
    return lo, lo + width - 1


# ----------------------------------------------------------------------------------------------
# Extractors: one per (search-parameter type, FHIR leaf type)
# ----------------------------------------------------------------------------------------------


class _Acc:
    """Row accumulator; dicts used as insertion-ordered sets (dedup + deterministic order)."""

    __slots__ = ("date", "number", "quantity", "reference", "resource", "string", "token", "uri")

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.token: dict[tuple[str, str | None, str | None, str | None], None] = {}
        self.string: dict[tuple[str, str, str], None] = {}
        self.reference: dict[tuple[str, str | None, str | None, str | None], None] = {}
        self.date: dict[tuple[str, int, int], None] = {}
        self.quantity: dict[tuple[str, float, str | None, str | None, str | None], None] = {}
        self.number: dict[tuple[str, float], None] = {}
        self.uri: dict[tuple[str, str], None] = {}


_Extractor = Callable[[_Acc, str, Any, "str | None"], None]


def _str_or_none(v: Any) -> str | None:
    return v if type(v) is str and v else None


# -- token (https://hl7.org/fhir/R4/search.html#token) -------------------------------------------


def _norm_or_none(v: str | None) -> str | None:
    return normalize_string(v) if v else None


def _tok_codeable_concept(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    text = node.get("text")
    # The text column is what ``:text`` matches: CodeableConcept.text, else Coding.display,
    # normalised like strings so the query side can prefix-match normalize_string(value).
    cc_text = normalize_string(text) if type(text) is str and text else None
    emitted = False
    codings = node.get("coding")
    if type(codings) is list:
        for c in codings:
            if type(c) is not dict:
                continue
            system = c.get("system")
            code = c.get("code")
            if type(system) is not str:
                system = None
            if type(code) is not str:
                code = None
            if cc_text is None:
                display = c.get("display")
                ctext = normalize_string(display) if type(display) is str and display else None
            else:
                ctext = cc_text
            if system is None and code is None and ctext is None:
                continue
            acc.token[(p, system, code, ctext)] = None
            emitted = True
    if not emitted and cc_text is not None:
        acc.token[(p, None, None, cc_text)] = None


def _tok_coding(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    system = _str_or_none(node.get("system"))
    code = _str_or_none(node.get("code"))
    display = _norm_or_none(_str_or_none(node.get("display")))
    if system is not None or code is not None or display is not None:
        acc.token[(p, system, code, display)] = None


def _tok_identifier(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    system = _str_or_none(node.get("system"))
    value = _str_or_none(node.get("value"))
    if system is None and value is None:
        return
    typ = node.get("type")
    text = _norm_or_none(_str_or_none(typ.get("text"))) if type(typ) is dict else None
    acc.token[(p, system, value, text)] = None


def _tok_contact_point(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    # Token search on a ContactPoint matches ContactPoint.value; ``system`` (phone/email) is not
    # a code system, so it is not put into the system column.
    if type(node) is dict:
        value = node.get("value")
        if type(value) is str and value:
            acc.token[(p, None, value, None)] = None


def _tok_boolean(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if node is True:
        acc.token[(p, None, "true", None)] = None
    elif node is False:
        acc.token[(p, None, "false", None)] = None


def _tok_primitive(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is str and node:
        acc.token[(p, None, node, None)] = None


# -- string (https://hl7.org/fhir/R4/search.html#string) -----------------------------------------


def _add_string(acc: _Acc, p: str, v: Any) -> None:
    if type(v) is str and v:
        acc.string[(p, normalize_string(v), v)] = None


def _str_primitive(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is str and node:
        acc.string[(p, normalize_string(node), node)] = None


_NAME_SCALARS = ("family", "text")
_NAME_LISTS = ("given", "prefix", "suffix")
_ADDRESS_SCALARS = ("city", "district", "state", "postalCode", "country", "text")


def _str_human_name(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    for k in _NAME_SCALARS:
        _add_string(acc, p, node.get(k))
    for k in _NAME_LISTS:
        values = node.get(k)
        if type(values) is list:
            for v in values:
                _add_string(acc, p, v)


def _str_address(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    lines = node.get("line")
    if type(lines) is list:
        for v in lines:
            _add_string(acc, p, v)
    for k in _ADDRESS_SCALARS:
        _add_string(acc, p, node.get(k))


# -- reference (https://hl7.org/fhir/R4/search.html#reference) -----------------------------------

_RESOURCE_TYPES = frozenset(_table.RESOURCE_TYPES)
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """``(target_type, target_id, url)`` of a Reference.reference string.

    ``Type/id`` (optionally ``/_history/v``) -> type and id, url None. An absolute URL whose last
    segments are ``Type/id[/_history/v]`` -> type, id and the full url. ``#contained``,
    ``urn:uuid:``/``urn:oid:`` and anything else -> url only.
    """
    if ref[0] == "#" or ref.startswith("urn:"):
        return None, None, ref
    parts = ref.split("/")
    n = len(parts)
    if n >= 4 and parts[-2] == "_history":
        n -= 2
    if n >= 2:
        rtype, rid = parts[n - 2], parts[n - 1]
        if rtype in _RESOURCE_TYPES and _ID_RE.fullmatch(rid):
            return rtype, rid, (ref if n > 2 else None)
    return None, None, ref


def _contained_type(resource: dict[str, Any], local_id: str) -> str | None:
    contained = resource.get("contained")
    if type(contained) is list:
        for c in contained:
            if type(c) is dict and c.get("id") == local_id:
                rt = c.get("resourceType")
                return rt if type(rt) is str else None
    return None


def _ref_reference(acc: _Acc, p: str, node: Any, restrict: str | None) -> None:
    if type(node) is not dict:
        return
    ref = node.get("reference")
    if type(ref) is not str or not ref:
        return  # identifier-only / display-only Reference: nothing to match on
    target_type, target_id, url = _parse_reference(ref)
    if ref[0] == "#":
        # A contained target is resolved locally: its row carries its type (and no id), so that
        # a restriction read from the row (``SUBSET_ALIASES``) sees it as resolve() would.
        target_type = _contained_type(acc.resource, ref[1:])
    # where(resolve() is T): urn:uuid and foreign URLs cannot be resolved here, so (like FHIRPath's
    # empty resolve()) they do not match.
    if restrict is not None and target_type != restrict:
        return
    acc.reference[(p, target_type, target_id, url)] = None


def _ref_canonical(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is str and node:
        acc.reference[(p, None, None, node)] = None


# -- date (https://hl7.org/fhir/R4/search.html#date) ---------------------------------------------


def _date_primitive(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is str:
        try:
            lo, hi = date_bounds(node)
        except ValueError:
            return
        acc.date[(p, lo, hi)] = None


def _date_period(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    start = node.get("start")
    end = node.get("end")
    if start is None and end is None:
        return
    try:
        lo = date_bounds(start)[0] if start is not None else DATE_MIN_US
        hi = date_bounds(end)[1] if end is not None else DATE_MAX_US
    except ValueError:
        return
    acc.date[(p, lo, hi)] = None


def _date_timing(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    events = node.get("event")
    if type(events) is list:
        for e in events:
            _date_primitive(acc, p, e, None)
    repeat = node.get("repeat")
    if type(repeat) is dict and "boundsPeriod" in repeat:
        _date_period(acc, p, repeat["boundsPeriod"], None)


# -- quantity / number / uri ---------------------------------------------------------------------


_NUMBER = frozenset((int, float, FhirDecimal))


def _qty_quantity(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is not dict:
        return
    value = node.get("value")
    if type(value) not in _NUMBER:  # also rejects bool
        return
    acc.quantity[
        (
            p,
            float(value),  # type: ignore[arg-type]  # checked above: int, float or FhirDecimal
            _str_or_none(node.get("system")),
            _str_or_none(node.get("code")),
            _str_or_none(node.get("unit")),
        )
    ] = None


_ISO_4217 = "urn:iso:std:iso:4217"


def _qty_money(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    # Money: the currency is the code, in the ISO 4217 system (https://hl7.org/fhir/R4/datatypes.html#Money).
    if type(node) is not dict:
        return
    value = node.get("value")
    if type(value) not in _NUMBER:
        return
    currency = _str_or_none(node.get("currency"))
    acc.quantity[(p, float(value), _ISO_4217 if currency else None, currency, None)] = None  # type: ignore[arg-type]


def _qty_range(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is dict:
        _qty_quantity(acc, p, node.get("low"), None)
        _qty_quantity(acc, p, node.get("high"), None)


def _number(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) in _NUMBER:
        acc.number[(p, float(node))] = None


def _uri(acc: _Acc, p: str, node: Any, _r: str | None) -> None:
    if type(node) is str and node:
        acc.uri[(p, node)] = None


_EXTRACTORS: dict[tuple[str, str], _Extractor] = {}
for _leaf in ("code", "string", "id", "uri", "url", "canonical", "oid", "uuid", "markdown"):
    _EXTRACTORS[("token", _leaf)] = _tok_primitive
_EXTRACTORS[("token", "CodeableConcept")] = _tok_codeable_concept
_EXTRACTORS[("token", "Coding")] = _tok_coding
_EXTRACTORS[("token", "Identifier")] = _tok_identifier
_EXTRACTORS[("token", "ContactPoint")] = _tok_contact_point
_EXTRACTORS[("token", "boolean")] = _tok_boolean
for _leaf in ("string", "markdown", "code", "id", "uri", "url", "canonical"):
    _EXTRACTORS[("string", _leaf)] = _str_primitive
_EXTRACTORS[("string", "HumanName")] = _str_human_name
_EXTRACTORS[("string", "Address")] = _str_address
_EXTRACTORS[("reference", "Reference")] = _ref_reference
for _leaf in ("canonical", "uri", "url"):
    _EXTRACTORS[("reference", _leaf)] = _ref_canonical
for _leaf in ("date", "dateTime", "instant"):
    _EXTRACTORS[("date", _leaf)] = _date_primitive
_EXTRACTORS[("date", "Period")] = _date_period
_EXTRACTORS[("date", "Timing")] = _date_timing
for _leaf in ("Quantity", "SimpleQuantity", "MoneyQuantity", "Age", "Duration", "Distance", "Count"):
    _EXTRACTORS[("quantity", _leaf)] = _qty_quantity
_EXTRACTORS[("quantity", "Money")] = _qty_money
_EXTRACTORS[("quantity", "Range")] = _qty_range
for _leaf in ("decimal", "integer", "positiveInt", "unsignedInt"):
    _EXTRACTORS[("number", _leaf)] = _number
for _leaf in ("uri", "url", "canonical", "oid", "uuid"):
    _EXTRACTORS[("uri", _leaf)] = _uri


# ----------------------------------------------------------------------------------------------
# Plans built from the generated table
# ----------------------------------------------------------------------------------------------

_Step = tuple[str, tuple[tuple[str, str], ...], bool]  # (json key, equality filters, first only)
# (param, first-step filters, first-step first-only, remaining steps, extractor, restrict)
_Entry = tuple[str, tuple[tuple[str, str], ...], bool, tuple[_Step, ...], _Extractor, "str | None"]
# (param, mode, alternative step chains)
_ExistsEntry = tuple[str, str, tuple[tuple[_Step, ...], ...]]


def _bases(rtype: str) -> tuple[str, ...]:
    kind = _table.RESOURCE_TYPES[rtype]
    return ("Resource", "DomainResource", rtype) if kind == "DomainResource" else ("Resource", rtype)


def _build_registry() -> dict[str, Mapping[str, SearchParam]]:
    registry: dict[str, Mapping[str, SearchParam]] = {}
    for rtype in _table.RESOURCE_TYPES:
        params: dict[str, SearchParam] = {}
        for base in _bases(rtype):
            for code, ptype, tidx, indexed, _reason in _table.PARAMS.get(base, ()):
                params[code] = SearchParam(code, ptype, _table.TARGETS[tidx], indexed)
        registry[rtype] = MappingProxyType(dict(sorted(params.items())))
    return registry


# Parameters that are exactly the union of others of the same type (R4 defines Observation's
# combo-* as "code or component.code", etc.). Their rows would duplicate their parts' rows, so they
# are not extracted; the search layer answers them from the parts (``param IN (parts)``).
UNION_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "Observation": {
        "combo-code": ("code", "component-code"),
        "combo-data-absent-reason": ("data-absent-reason", "component-data-absent-reason"),
        "combo-value-concept": ("value-concept", "component-value-concept"),
        "combo-value-quantity": ("value-quantity", "component-value-quantity"),
    },
}


def index_params(resource_type: str, code: str) -> tuple[str, ...]:
    """The ``param`` values under which the rows of search parameter ``code`` are stored."""
    return UNION_ALIASES.get(resource_type, {}).get(code, (code,))


def _subset_aliases() -> dict[str, dict[str, tuple[str, str]]]:
    """Reference parameters that R4 defines as another parameter of the same type restricted to one
    target type: Observation's ``patient`` is ``subject.where(resolve() is Patient)``,
    Appointment's ``practitioner`` is ``actor.where(resolve() is Practitioner)`` (47 of them). Their
    rows would duplicate the other parameter's rows, so they are not extracted; the search layer
    answers them from those rows (``param = 'subject' AND target_type = 'Patient'``)."""
    aliases: dict[str, dict[str, tuple[str, str]]] = {}
    for base, rows in _table.BRANCHES.items():
        paths: dict[str, set[tuple[Any, ...]]] = {}
        restricts: dict[str, set[str | None]] = {}
        for code, steps, leaf, restrict in rows:
            paths.setdefault(code, set()).add((steps, leaf))
            restricts.setdefault(code, set()).add(restrict)
        for code, targets in restricts.items():
            target = next(iter(targets))
            if len(targets) != 1 or target is None:
                continue
            for other, other_targets in restricts.items():
                if other != code and other_targets == {None} and paths[other] == paths[code]:
                    aliases.setdefault(base, {})[code] = (other, target)
                    break
    return {
        rtype: merged
        for rtype in _table.RESOURCE_TYPES
        if (merged := {k: v for base in _bases(rtype) for k, v in aliases.get(base, {}).items()})
    }


SUBSET_ALIASES: dict[str, dict[str, tuple[str, str]]] = _subset_aliases()


def stored_reference(resource_type: str, code: str) -> tuple[str, str | None]:
    """The ``param`` under which reference parameter ``code``'s rows are stored, and the target type
    those rows must have (None: any)."""
    return SUBSET_ALIASES.get(resource_type, {}).get(code, (code, None))


def _build_plans(
    registry: Mapping[str, Mapping[str, SearchParam]],
) -> tuple[dict[str, dict[str, tuple[_Entry, ...]]], dict[str, tuple[_ExistsEntry, ...]]]:
    plans: dict[str, dict[str, tuple[_Entry, ...]]] = {}
    exists: dict[str, tuple[_ExistsEntry, ...]] = {}
    for rtype, params in registry.items():
        by_key: dict[str, list[_Entry]] = {}
        ex: list[_ExistsEntry] = []
        aliases = {**UNION_ALIASES.get(rtype, {}), **SUBSET_ALIASES.get(rtype, {})}
        for base in _bases(rtype):
            for row in _table.BRANCHES.get(base, ()):
                code, steps, leaf, restrict = row
                if code in aliases:
                    continue
                fn = _EXTRACTORS[(params[code].type, leaf)]
                (key, filters, first), *rest = steps
                by_key.setdefault(key, []).append((code, filters, first, tuple(rest), fn, restrict))
            ex.extend(_table.EXISTS.get(base, ()))
        plans[rtype] = {k: tuple(v) for k, v in by_key.items()}
        if ex:
            exists[rtype] = tuple(ex)
    return plans, exists


_REGISTRY = _build_registry()
_PLANS, _EXISTS = _build_plans(_REGISTRY)
# The R4 patient CompartmentDefinition, plus Device by its ``patient``: R4 leaves Device out, but a
# home-monitoring device names whose it is, and that is whose record it belongs to (access path).
COMPARTMENT_PATIENT: dict[str, tuple[str, ...]] = {**_table.COMPARTMENT_PATIENT, "Device": ("patient",)}
# By the rows that hold them: a compartment parameter that is a subset alias (CareTeam's
# ``patient``) is found in its parent's rows (``subject``), which are checked for a Patient target.
_COMPARTMENT: dict[str, frozenset[str]] = {
    rtype: frozenset(stored_reference(rtype, code)[0] for code in codes)
    for rtype, codes in COMPARTMENT_PATIENT.items()
}
# The part of each plan that finds compartment references, for reading a stored resource's patients
# without extracting all its index rows.
_COMPARTMENT_PLANS: dict[str, dict[str, tuple[_Entry, ...]]] = {
    rtype: {
        key: kept
        for key, entries in _PLANS.get(rtype, {}).items()
        if (kept := tuple(e for e in entries if e[0] in comp))
    }
    for rtype, comp in _COMPARTMENT.items()
}
_EMPTY: Mapping[str, SearchParam] = MappingProxyType({})


def search_params(resource_type: str) -> Mapping[str, SearchParam]:
    """Search parameters of ``resource_type``: code -> :class:`SearchParam` (read-only).

    Includes the parameters every type shares (``_profile``, ``_tag``, ``_security``, ``_source``;
    ``_text``/``_content``/``_query`` as unindexed) and excludes ``_id``/``_lastUpdated``, which the
    store answers from its own columns. Unknown resource types give an empty mapping.
    """
    return _REGISTRY.get(resource_type, _EMPTY)


# ----------------------------------------------------------------------------------------------
# extract_index
# ----------------------------------------------------------------------------------------------


def _filter(nodes: Iterable[Any], filters: tuple[tuple[str, str], ...]) -> list[Any]:
    return [n for n in nodes if type(n) is dict and all(n.get(f) == lit for f, lit in filters)]


def _walk(nodes: Iterable[Any], steps: tuple[_Step, ...]) -> Iterable[Any]:
    """Follow ``steps`` from ``nodes`` the way FHIRPath navigates: collections flatten."""
    for key, filters, first in steps:
        out: list[Any] = []
        for n in nodes:
            if type(n) is dict:
                v = n.get(key)
                if v is None:
                    continue
                if type(v) is list:
                    out.extend(v)
                else:
                    out.append(v)
        if filters:
            out = _filter(out, filters)
        if first:
            del out[1:]
        if not out:
            return ()
        nodes = out
    return nodes


def compartment_patients(resource: dict[str, Any]) -> set[str]:
    """The ids of the Patients whose compartment holds ``resource`` - ``extract_index(resource).patients``
    at a fraction of the cost (only the compartment's reference parameters are walked)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return set()
    plan = _COMPARTMENT_PLANS.get(rtype)
    if plan is None:
        return set()
    acc = _Acc(resource)
    _run_plan(acc, plan, resource)
    return _patients_from(rtype, acc, resource)


def _run_plan(acc: _Acc, plan: dict[str, tuple[_Entry, ...]], resource: dict[str, Any]) -> None:
    for key, value in resource.items():
        entries = plan.get(key)
        if entries is None:
            continue
        top = value if type(value) is list else (value,)
        for param, filters, first, rest, fn, restrict in entries:
            nodes: Iterable[Any] = top
            if filters:
                nodes = _filter(nodes, filters)
            if first:
                nodes = list(nodes)[:1]
            if rest:
                nodes = _walk(nodes, rest)
            for node in nodes:
                fn(acc, param, node, restrict)


def _patients_from(rtype: str, acc: _Acc, resource: dict[str, Any]) -> set[str]:
    patients: set[str] = set()
    comp = _COMPARTMENT.get(rtype)
    if comp is not None:
        for param, target_type, target_id, url in acc.reference:
            # Only relative references name a local Patient (see the module docstring).
            if target_type == "Patient" and url is None and param in comp and target_id:
                patients.add(target_id)
    if rtype == "Patient":
        own = resource.get("id")
        if type(own) is str and own:
            patients.add(own)
    return patients


def extract_index(resource: dict[str, Any]) -> IndexRows:
    """Search-index rows and Patient compartments of one resource (see :class:`IndexRows`).

    The resource must be a parsed FHIR R4 JSON object with ``resourceType``; an unknown type gives
    empty rows. Contained resources are not indexed (they are searched through their container).
    ``urn:uuid:`` references must have been resolved to ``Type/id`` by the caller. Never raises on
    malformed element values: they are skipped (validation is a separate step).
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return IndexRows()
    plan = _PLANS.get(rtype)
    if plan is None:
        return IndexRows()
    acc = _Acc(resource)
    _run_plan(acc, plan, resource)
    ex = _EXISTS.get(rtype)
    if ex is not None:
        for param, mode, chains in ex:
            found = [v for chain in chains for v in _walk((resource,), chain)]
            flag = any(v is not False for v in found) if mode == "not_false" else bool(found)
            acc.token[(param, None, "true" if flag else "false", None)] = None

    patients = _patients_from(rtype, acc, resource)
    return IndexRows(
        token=list(acc.token),
        string=list(acc.string),
        reference=list(acc.reference),
        date=list(acc.date),
        quantity=list(acc.quantity),
        number=list(acc.number),
        uri=list(acc.uri),
        patients=patients,
    )
