"""FHIR search: parse the query, build indexed SQL over the ``sp_*`` tables, run it, page it.

Every filter becomes ``r.res_id IN (SELECT res_id FROM sp_<type> WHERE res_type = .. AND param = ..
AND <value test>)``; AND across parameters, OR across comma-separated values (R4 search.html §3.1.1.3).
Nothing looks inside the stored JSON. Paging is by offset on a deterministic order.

Every search is confined to one organization (``r.org_id``). The ``restrict`` hook lets the access
layer add its own condition on ``r`` to the same SQL so that counts and pages stay right, and the
``admit`` hook filters what ``_include``/``_revinclude`` would add. The ``also`` hook is the one
way past the organization: a condition naming other organizations' resources that a patient's
Consent grants the actor, OR-ed with the organization's own (decision 0010).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from housecall.core.db import Conn
from housecall.fhir.errors import bad_request
from housecall.fhir.indexing import (
    COMPARTMENT_PATIENT,
    SearchParam,
    date_bounds,
    index_params,
    normalize_string,
    search_params,
    stored_reference,
)
from housecall.fhir.store import Store, Stored, now_us, stored_row

CONTROL = {
    "_count", "_offset", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
    "_format", "_pretty", "_totalMethod", "_include:iterate", "_revinclude:iterate", "_contained",
}  # fmt: skip
# A search sorted by -date may be driven by a token filter of up to this many system|code values:
# one merged index range each (SearchBuilder.date_driver); the statement grows with each.
MAX_DRIVING_VALUES = 8
MODIFIERS = {"exact", "contains", "missing", "not", "text", "above", "below", "identifier", "iterate"}
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")
_SPLIT_COMMA = re.compile(r"(?<!\\),")


@dataclass(slots=True)
class Filter:
    code: str
    modifier: str | None
    chain: list[str]  # e.g. ["name"] for subject:Patient.name
    values: list[str]  # OR-ed


@dataclass(slots=True)
class Include:
    source: str
    param: str
    target: str | None
    iterate: bool = False


@dataclass
class SearchRequest:
    res_type: str
    filters: list[Filter] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (code, descending)
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "none"
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


@dataclass
class SearchResult:
    matches: list[Stored]
    included: list[Stored]
    total: int | None
    has_more: bool


def _split_values(value: str) -> list[str]:
    return [v.replace("\\,", ",") for v in _SPLIT_COMMA.split(value)]


def parse_search(
    res_type: str, query: list[tuple[str, str]], *, strict: bool, default_count: int, max_count: int
) -> SearchRequest:
    req = SearchRequest(res_type, count=default_count)
    params = search_params(res_type)
    for key, value in query:
        if key in CONTROL:
            _parse_control(req, key, value, max_count)
            req.used.append((key, value))
            continue
        head, *chain = key.split(".")
        code, _, modifier = head.partition(":")
        if code in ("_id", "_lastUpdated"):
            req.filters.append(Filter(code, modifier or None, [], _split_values(value)))
            req.used.append((key, value))
            continue
        if code == "_has":
            req.filters.append(Filter("_has", key[len("_has:") :], [], _split_values(value)))
            req.used.append((key, value))
            continue
        sp = params.get(code)
        problem = None
        if sp is None:
            problem = f"unknown search parameter '{code}' for {res_type}"
        elif not sp.indexed:
            problem = f"search parameter '{code}' is not supported (not indexed)"
        elif (
            modifier and modifier not in MODIFIERS and not (sp.type == "reference" and modifier[:1].isupper())
        ):
            problem = f"unsupported modifier ':{modifier}' on '{code}'"
        if problem:
            if strict:
                raise bad_request(problem, "not-supported")
            req.ignored.append(key)
            continue
        req.filters.append(Filter(code, modifier or None, chain, _split_values(value)))
        req.used.append((key, value))
    return req


def _parse_control(req: SearchRequest, key: str, value: str, max_count: int) -> None:
    if key == "_count":
        if not value.isdigit():
            raise bad_request(f"_count must be a non-negative integer, not '{value}'")
        n = int(value)
        if n > max_count:
            raise bad_request(f"_count may be at most {max_count}", "too-costly")
        req.count = n
    elif key == "_offset":
        if not value.isdigit():
            raise bad_request("_offset must be a non-negative integer")
        req.offset = int(value)
    elif key == "_sort":
        for part in value.split(","):
            part = part.strip()
            if part:
                req.sort.append((part.lstrip("-"), part.startswith("-")))
    elif key in ("_include", "_revinclude", "_include:iterate", "_revinclude:iterate"):
        pieces = value.split(":")
        inc = Include(
            pieces[0], pieces[1] if len(pieces) > 1 else "*", pieces[2] if len(pieces) > 2 else None
        )
        inc.iterate = key.endswith(":iterate")
        (req.include if key.startswith("_include") else req.revinclude).append(inc)
    elif key == "_summary":
        if value not in ("true", "false", "count", "data", "text"):
            raise bad_request(f"_summary must be true, false, count, data or text, not '{value}'")
        req.summary = None if value == "false" else value
    elif key == "_elements":
        req.elements = [e.strip() for e in value.split(",") if e.strip()]
    elif key == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise bad_request("_total must be none, estimate or accurate")
        req.total = value
    elif key == "_totalMethod" and value == "count":
        req.total = "accurate"


class _Sql:
    """Collects bound values; ``p(v)`` returns the placeholder for v."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def p(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def many(self, values: list[Any]) -> str:
        return ", ".join(self.p(v) for v in values)


def _param_test(
    sql: _Sql, res_type: str, code: str, column: str = "param", *, unindexed: bool = False
) -> str:
    """The rows of search parameter ``code`` of ``res_type``, ``column`` naming the ``param`` column
    (an alias's prefix, if any, also names its ``target_type``): the rows are stored under other
    parameters for unions (``combo-code``) and restrictions (``patient``: ``subject`` rows of a
    Patient), see ``indexing.UNION_ALIASES`` and ``indexing.SUBSET_ALIASES``.

    ``unindexed`` compares an expression of the column, which no lookup index can serve (every one
    leads with res_type, param; ``ids_matching`` hides res_type too): the rows are then found by
    their owner (``res_id``) alone."""
    tested = f"({column} || '')" if unindexed else column
    parent, target = stored_reference(res_type, code)
    if target is not None:
        target_type = column[: -len("param")] + "target_type"
        return f"{tested} = {sql.p(parent)} AND {target_type} = {sql.p(target)}"
    stored_as = index_params(res_type, code)
    if len(stored_as) == 1:
        return f"{tested} = {sql.p(code)}"
    return f"{tested} IN ({sql.many(list(stored_as))})"


def _decimal_range(text: str) -> tuple[float, float, float]:
    """Value and the half-open interval implied by its precision (search.html §3.1.1.4.2)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise bad_request(f"'{text}' is not a number") from None
    exponent = d.as_tuple().exponent
    half = Decimal(5) * Decimal(10) ** (int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return float(d), float(d - half), float(d + half)


def _split_prefix(value: str) -> tuple[str, str]:
    m = _PREFIX_RE.match(value)
    if m:
        return m.group(1), value[2:]
    return "eq", value


def _number_test(sql: _Sql, col: str, value: str) -> str:
    prefix, rest = _split_prefix(value)
    v, lo, hi = _decimal_range(rest)
    if prefix == "eq":
        return f"({col} >= {sql.p(lo)} AND {col} < {sql.p(hi)})"
    if prefix == "ne":
        return f"({col} < {sql.p(lo)} OR {col} >= {sql.p(hi)})"
    if prefix == "ap":
        margin = abs(v) * 0.1
        return f"({col} >= {sql.p(v - margin)} AND {col} <= {sql.p(v + margin)})"
    op = {"gt": ">", "sa": ">", "lt": "<", "eb": "<", "ge": ">=", "le": "<="}[prefix]
    return f"{col} {op} {sql.p(v)}"


def _date_test(sql: _Sql, lo_col: str, hi_col: str, value: str) -> str:
    prefix, rest = _split_prefix(value)
    try:
        qlo, qhi = date_bounds(rest)
    except ValueError:
        raise bad_request(f"'{rest}' is not a valid date, dateTime or instant") from None
    if prefix == "eq":
        return f"({lo_col} >= {sql.p(qlo)} AND {hi_col} <= {sql.p(qhi)})"
    if prefix == "ne":
        return f"({lo_col} < {sql.p(qlo)} OR {hi_col} > {sql.p(qhi)})"
    if prefix == "gt":
        return f"{hi_col} > {sql.p(qhi)}"
    if prefix == "ge":
        return f"{hi_col} >= {sql.p(qlo)}"
    if prefix == "lt":
        return f"{lo_col} < {sql.p(qlo)}"
    if prefix == "le":
        return f"{lo_col} <= {sql.p(qhi)}"
    if prefix == "sa":
        return f"{lo_col} > {sql.p(qhi)}"
    if prefix == "eb":
        return f"{hi_col} < {sql.p(qlo)}"
    # ap: within 10% of the distance from now, at least a day (search.html: "approximately").
    margin = max(abs(now_us() - qlo) // 10, 86_400_000_000)
    return f"({hi_col} >= {sql.p(qlo - margin)} AND {lo_col} <= {sql.p(qhi + margin)})"


def _token_test(sql: _Sql, value: str, modifier: str | None) -> str:
    if modifier == "text":
        return f"text LIKE {sql.p(normalize_string(value) + '%')}"
    if "|" in value:
        system, code = value.split("|", 1)
        system = system.replace("\\|", "|")
        parts = []
        if system:
            parts.append(f"system = {sql.p(system)}")
        else:
            parts.append("system IS NULL")
        if code:
            parts.append(f"code = {sql.p(code)}")
        return "(" + " AND ".join(parts) + ")"
    return f"code = {sql.p(value)}"


def _string_test(sql: _Sql, value: str, modifier: str | None) -> str:
    if modifier == "exact":
        return f"exact = {sql.p(value)}"
    norm = normalize_string(value)
    if modifier == "contains":
        escaped = norm.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"norm LIKE {sql.p('%' + escaped + '%')} ESCAPE '\\'"
    # Prefix match as a range so both engines use the btree (byte order; U+10FFFF sorts last).
    return f"(norm >= {sql.p(norm)} AND norm < {sql.p(norm + chr(0x10FFFF))})"


def _uri_test(sql: _Sql, value: str, modifier: str | None) -> str:
    if modifier == "below":
        return f"(value >= {sql.p(value)} AND value < {sql.p(value + chr(0x10FFFF))})"
    return f"value = {sql.p(value)}"


def _quantity_test(sql: _Sql, value: str) -> str:
    number, _, unit_part = value.partition("|")
    test = _number_test(sql, "value", number)
    if unit_part:
        system, _, code = unit_part.partition("|")
        if code:
            if system:
                test += f" AND system = {sql.p(system)}"
            test += f" AND (code = {sql.p(code)} OR unit = {sql.p(code)})"
        elif system:
            test += f" AND (code = {sql.p(system)} OR unit = {sql.p(system)})"
    return test


def _reference_test(sql: _Sql, sp: SearchParam, value: str, type_modifier: str | None, base_url: str) -> str:
    url = value
    if base_url and url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    if url.startswith(("http://", "https://", "urn:")):
        pieces = url.split("/")
        if len(pieces) >= 2 and pieces[-2][:1].isupper() and "_history" not in pieces:
            return f"(url = {sql.p(value)} OR (target_type = {sql.p(pieces[-2])} AND target_id = {sql.p(pieces[-1])}))"
        return f"url = {sql.p(value)}"
    parts = url.split("/")
    if len(parts) >= 2:
        return f"(target_type = {sql.p(parts[0])} AND target_id = {sql.p(parts[1])})"
    if type_modifier:
        return f"(target_type = {sql.p(type_modifier)} AND target_id = {sql.p(url)})"
    return f"target_id = {sql.p(url)}"


_TABLE_OF = {
    "token": "sp_token",
    "string": "sp_string",
    "reference": "sp_reference",
    "date": "sp_date",
    "quantity": "sp_quantity",
    "number": "sp_number",
    "uri": "sp_uri",
}


class SearchBuilder:
    def __init__(self, base_url: str = "") -> None:
        self.sql = _Sql()
        self.base_url = base_url

    def ids_matching(
        self,
        res_type: str,
        flt: Filter,
        pat: str | None = None,
        select: str = "res_id",
        *,
        probe: bool = False,
    ) -> tuple[str, bool]:
        """A subquery of ``res_id`` values of ``res_type`` matching the filter, and whether to negate.

        ``pat`` (``param|patient-id``) narrows token rows to the resources that reference that
        patient through that compartment parameter, which turns "code C" into "this patient's
        code C" - one exact index range. ``select`` names other columns of the index rows to return.
        ``probe``: the subquery will be asked about one resource at a time (``f.res_id = k.res_id``),
        so its rows are looked up by their owner: res_type and param are compared as expressions,
        which no lookup index serves (SQLite would otherwise scan a covering index's whole type).
        """
        sql = self.sql
        if flt.code == "_id":
            return (
                f"SELECT res_id FROM resource WHERE res_type = {sql.p(res_type)} AND res_id IN ({sql.many(flt.values)})",
                (flt.modifier == "not"),
            )
        if flt.code == "_lastUpdated":
            tests = " OR ".join(_date_test(sql, "last_updated", "last_updated", v) for v in flt.values)
            return f"SELECT res_id FROM resource WHERE res_type = {sql.p(res_type)} AND ({tests})", False
        if flt.code == "_has":
            return self._has(res_type, flt), False
        sp = search_params(res_type).get(flt.code)
        if sp is None or not sp.indexed:
            raise bad_request(f"unknown search parameter '{flt.code}' for {res_type}", "not-supported")
        table = _TABLE_OF.get(sp.type)
        if table is None:
            raise bad_request(f"search parameter '{flt.code}' ({sp.type}) is not supported", "not-supported")
        of_type = "(res_type || '')" if probe else "res_type"
        param = _param_test(sql, res_type, flt.code, unindexed=probe)
        head = f"SELECT {select} FROM {table} WHERE {of_type} = {sql.p(res_type)} AND {param}"
        if pat is not None and sp.type == "token" and flt.modifier not in ("not", "missing"):
            head += f" AND pat = {sql.p(pat)}"
        if flt.modifier == "missing":
            if flt.values[0] not in ("true", "false"):
                raise bad_request(":missing takes true or false")
            return head, flt.values[0] == "true"
        if flt.chain:
            return head + " AND " + self._chain(sp, flt), False
        value_tests = [self._value_test(sp, v, flt.modifier) for v in flt.values]
        return head + " AND (" + " OR ".join(value_tests) + ")", flt.modifier == "not"

    def _param(self, res_type: str, code: str, column: str = "param") -> str:
        return _param_test(self.sql, res_type, code, column)

    def _value_test(self, sp: SearchParam, value: str, modifier: str | None) -> str:
        sql = self.sql
        if value == "":
            raise bad_request(f"empty value for search parameter '{sp.code}'")
        if sp.type == "token":
            return _token_test(sql, value, modifier)
        if sp.type == "string":
            return _string_test(sql, value, modifier)
        if sp.type == "date":
            return _date_test(sql, "lo", "hi", value)
        if sp.type in ("number",):
            return _number_test(sql, "value", value)
        if sp.type == "quantity":
            return _quantity_test(sql, value)
        if sp.type == "uri":
            return _uri_test(sql, value, modifier)
        if sp.type == "reference":
            type_mod = modifier if modifier and modifier[:1].isupper() else None
            test = _reference_test(sql, sp, value, type_mod, self.base_url)
            if type_mod:
                test = f"({test} AND target_type = {sql.p(type_mod)})"
            return test
        raise bad_request(f"search parameter type {sp.type} is not supported", "not-supported")

    def _chain(self, sp: SearchParam, flt: Filter) -> str:
        if sp.type != "reference":
            raise bad_request(f"'{flt.code}' is not a reference; it cannot be chained")
        targets = [flt.modifier] if flt.modifier and flt.modifier[:1].isupper() else list(sp.targets)
        inner_code = flt.chain[0]
        alternatives = []
        for target in targets:
            if inner_code.split(":")[0] not in {*search_params(target), "_id", "_lastUpdated"}:
                continue
            sub = Filter(inner_code, None, flt.chain[1:], flt.values)
            if ":" in inner_code:
                inner, _, mod = inner_code.partition(":")
                sub = Filter(inner, mod, flt.chain[1:], flt.values)
            subquery, negate = self.ids_matching(target, sub)
            op = "NOT IN" if negate else "IN"
            alternatives.append(f"(target_type = {self.sql.p(target)} AND target_id {op} ({subquery}))")
        if not alternatives:
            raise bad_request(f"no target of '{flt.code}' has a search parameter '{inner_code}'")
        return "(" + " OR ".join(alternatives) + ")"

    def _has(self, res_type: str, flt: Filter) -> str:
        # _has:Observation:patient:code=1234 - resources referenced by a matching Observation.
        pieces = flt.modifier.split(":") if flt.modifier else []
        if len(pieces) != 3:
            raise bad_request("_has takes the form _has:Type:reference-param:search-param=value")
        other, ref_param, inner = pieces
        sub, negate = self.ids_matching(other, Filter(inner, None, [], flt.values))
        op = "NOT IN" if negate else "IN"
        return (
            f"SELECT target_id FROM sp_reference WHERE res_type = {self.sql.p(other)} AND "
            f"{self._param(other, ref_param)} AND target_type = {self.sql.p(res_type)} AND res_id {op} ({sub})"
        )

    def _pinned_patient(self, res_type: str, flt: Filter) -> str | None:
        """``param|patient-id`` when the filter is exactly "this compartment parameter references
        Patient X" (``subject=Patient/X``, ``patient=X`` where that parameter defines the compartment),
        or names the same rows another way (decision 0029): Observation's ``patient=X`` is its
        compartment's ``subject`` rows of Patient X, Encounter's ``subject=Patient/X`` its ``patient``'s."""
        if flt.chain or len(flt.values) != 1 or flt.modifier not in (None, "Patient"):
            return None
        sp = search_params(res_type).get(flt.code)
        if sp is None or sp.type != "reference":
            return None
        compartment = COMPARTMENT_PATIENT.get(res_type, ())
        link: str | None = flt.code
        if link not in compartment:
            stored_as = stored_reference(res_type, flt.code)[0]
            link = next(
                (c for c in sorted(compartment) if stored_reference(res_type, c)[0] == stored_as), None
            )
            if link is None:
                return None
        value = flt.values[0]
        if self.base_url and value.startswith(self.base_url + "/"):
            value = value[len(self.base_url) + 1 :]
        if value.startswith("Patient/") and value.count("/") == 1 and len(value) > len("Patient/"):
            return f"{link}|{value[len('Patient/') :]}"
        if value and "/" not in value and (flt.modifier == "Patient" or sp.targets == ("Patient",)):
            return f"{link}|{value}"
        return None

    def _narrowing(self, req: SearchRequest) -> tuple[int, str | None]:
        """(the index of the filter that pins a patient, ``param|patient-id``) when the search's
        token filters can be narrowed to that patient's rows; (-1, None) when they cannot."""
        pin_index, pat = next(
            ((n, p) for n, f in enumerate(req.filters) if (p := self._pinned_patient(req.res_type, f))),
            (-1, None),
        )
        params = search_params(req.res_type)
        narrowed = pat is not None and any(
            n != pin_index and f.modifier not in ("not", "missing") and not f.chain
            and getattr(params.get(f.code), "type", None) == "token"
            for n, f in enumerate(req.filters)
        )  # fmt: skip
        return (pin_index, pat) if narrowed else (-1, None)

    def date_driver(self, req: SearchRequest) -> tuple[int, str] | None:
        """For a search sorted newest first by ``date`` alone, whose token filters are narrowed to a
        patient (decision 0004) and one of which names only ``system|code`` values (at most
        ``MAX_DRIVING_VALUES``): (that filter's index, a subquery of its rows' ``date_order`` and
        ``res_id``; a resource can have two, when it repeats the code with another display). Each
        value's rows are one range of the token lookup index, newest first (decision 0031); several
        values' ranges are merged, each in its own order (decision 0032). The search reads a page
        of them and stops, however many match, where sorting reads every match's date. The filter
        with the fewest values drives. None for any other search."""
        if (
            req.sort != [("date", True)]
            or getattr(search_params(req.res_type).get("date"), "type", None) != "date"
        ):
            return None
        pin_index, pat = self._narrowing(req)
        if pat is None:
            return None
        params = search_params(req.res_type)

        def drives(n: int, flt: Filter) -> bool:
            sp = params.get(flt.code)
            return (
                n != pin_index and flt.modifier is None and not flt.chain
                and 0 < len(flt.values) <= MAX_DRIVING_VALUES
                and sp is not None and sp.type == "token" and sp.indexed
                and len(index_params(req.res_type, flt.code)) == 1
                and all(system and code for system, _, code in (v.partition("|") for v in flt.values))
            )  # fmt: skip

        candidates = [(len(f.values), n) for n, f in enumerate(req.filters) if drives(n, f)]
        if not candidates:
            return None
        n = min(candidates)[1]
        flt = req.filters[n]
        ranges = [
            self.ids_matching(
                req.res_type, Filter(flt.code, None, [], [value]), pat, select="date_order, res_id"
            )[0]
            for value in flt.values
        ]
        if len(ranges) == 1:
            return n, ranges[0]
        # ORDER BY in each branch: PostgreSQL then merges the ranges in order (Merge Append) and
        # can stop after a page; one ORDER BY over the UNION ALL would sort every row of them.
        return n, " UNION ALL ".join(
            f"SELECT * FROM ({rows} ORDER BY date_order, res_id) d{i}" for i, rows in enumerate(ranges)
        )

    def where(
        self,
        req: SearchRequest,
        org_id: str,
        restrict: str | None = None,
        also: str | None = None,
        *,
        driven_by: int | None = None,
    ) -> str:
        """The WHERE of a search: its filters, in ``org_id`` under ``restrict``, or matching
        ``also`` (another organization's resources granted by Consent; it names their org_id).
        ``driven_by``: the filter the caller already applies (``date_driver``). Its rows come in the
        page's order, and the other conditions are then asked of each resource in turn (a subquery
        per row, by the resource's id), so that the database stops after a page whatever it
        estimates: as joins, a prepared statement's generic plan may read and hash every match
        first (decision 0032)."""
        sql = self.sql
        driven = driven_by is not None
        if driven:
            restrict, also = _asked(restrict), _asked(also)
        scope = f"r.org_id = {sql.p(org_id)}"
        if also:
            scope = f"(({scope} AND {restrict}) OR {also})" if restrict else f"({scope} OR {also})"
            restrict = None
        clauses = [f"r.res_type = {sql.p(req.res_type)}", scope, "NOT r.deleted"]
        positive: list[str] = []
        pin_index, pat = self._narrowing(req)
        for n, flt in enumerate(req.filters):
            if n == driven_by:
                continue
            if pat is not None and n == pin_index:
                # The narrowed token filters only hold rows of resources with exactly this reference,
                # so the reference filter itself is implied (and would read every row naming the patient).
                continue
            if driven and flt.code != "_has":  # (_has selects target ids; it stays a join)
                # Asked of the driving row (k), so that a row the filter rejects is not joined first.
                sub, negate = self.ids_matching(req.res_type, flt, pat, probe=True)
                clauses.append(
                    f"(SELECT 1 FROM ({sub}) f WHERE f.res_id = k.res_id LIMIT 1) IS {'' if negate else 'NOT '}NULL"
                )
                continue
            sub, negate = self.ids_matching(req.res_type, flt, pat)
            if negate:
                clauses.append(f"r.res_id NOT IN ({sub})")
            else:
                positive.append(sub)
        if positive:
            # One INTERSECT of the filters' id lists (each an index-only scan), then primary-key
            # lookups of the few survivors - rather than probing every resource of the type.
            clauses.append(f"r.res_id IN ({' INTERSECT '.join(positive)})")
        if restrict:
            clauses.append(restrict)
        return " AND ".join(clauses)

    def order_by(self, req: SearchRequest) -> str:
        keys = []
        params = search_params(req.res_type)
        for code, desc in req.sort:
            direction = "DESC" if desc else "ASC"
            if code == "_id":
                keys.append(f"r.res_id {direction}")
                continue
            if code == "_lastUpdated":
                keys.append(f"r.last_updated {direction}")
                continue
            sp = params.get(code)
            if sp is None or not sp.indexed or sp.type not in _TABLE_OF:
                raise bad_request(f"cannot sort by '{code}'", "not-supported")
            col, agg = {
                "date": ("hi" if desc else "lo", "MAX" if desc else "MIN"),
                "string": ("norm", "MIN"),
                "token": ("code", "MIN"),
                "reference": ("target_id", "MIN"),
                "number": ("value", "MIN"),
                "quantity": ("value", "MIN"),
                "uri": ("value", "MIN"),
            }[sp.type]
            keys.append(
                f"(SELECT {agg}(s.{col}) FROM {_TABLE_OF[sp.type]} s WHERE s.res_type = r.res_type AND "
                f"s.res_id = r.res_id AND {self._param(req.res_type, code, 's.param')}) {direction} NULLS LAST"
            )
        if not req.sort:
            # With filters, "+" keeps SQLite from walking the whole type in last_updated order and
            # probing each row against the filters; it drives from the filters' index lookups instead.
            keys.append("+r.last_updated ASC" if req.filters else "r.last_updated ASC")
        keys.append("r.res_id ASC")
        return ", ".join(keys)


def _asked(condition: str | None) -> str | None:
    """``condition`` on ``r`` as a subquery of its own, which the database evaluates for each row
    rather than turning into a join."""
    return None if condition is None else f"(SELECT 1 WHERE {condition}) IS NOT NULL"


async def run_search(
    conn: Conn,
    req: SearchRequest,
    *,
    org_id: str,
    base_url: str = "",
    restrict: Callable[[SearchBuilder], str | None] | None = None,
    admit: Callable[[list[Stored]], list[Stored]] | None = None,
    also: Callable[[SearchBuilder], str | None] | None = None,
    also_orgs: tuple[str, ...] = (),
) -> SearchResult:
    """Run a parsed search in one organization. ``restrict(builder)`` adds an access condition on
    ``r``; ``admit(resources)`` keeps the included resources the caller may see; ``also(builder)``
    a condition on other organizations' resources (those of ``also_orgs``, which includes may
    read too, each then marked with its ``Stored.org_id`` for ``admit`` to decide on)."""
    builder = SearchBuilder(base_url)
    restriction = restrict(builder) if restrict else None
    beyond = also(builder) if also else None
    driver = builder.date_driver(req)
    # (The WHERE names r.res_type: with k.res_id that is one primary-key probe per row of k.)
    source = "resource r" if driver is None else f"({driver[1]}) k JOIN resource r ON r.res_id = k.res_id"
    where = builder.where(req, org_id, restriction, beyond, driven_by=driver[0] if driver else None)
    total: int | None = None
    want_total = req.summary == "count" or req.count == 0 or req.total in ("accurate", "estimate")
    if want_total:
        counted = "count(*)" if driver is None else "count(DISTINCT k.res_id)"
        total = int(await conn.fetchval(f"SELECT {counted} FROM {source} WHERE {where}", *builder.sql.args))
    if req.summary == "count" or req.count == 0:
        return SearchResult([], [], total, False)
    group = ""
    if driver is None:
        order = builder.order_by(req)
    else:
        # The driver's rows come newest first (minus the date; none last), as order_by would sort
        # them; grouping in that order keeps one row per resource and lets the database stop after a
        # page. PostgreSQL wants r's key in the GROUP BY to return r's other columns; SQLite would
        # then sort, not knowing r.res_id is k.res_id.
        order = "k.date_order, k.res_id"
        group = f" GROUP BY {order}" + (", r.res_type, r.res_id" if conn.dialect == "postgresql" else "")
    limit = builder.sql.p(req.count + 1)
    offset = builder.sql.p(req.offset)
    # Each match's compartment rows come along (one index probe each): the audit trail and the
    # access check need its patients, which would otherwise mean parsing every match again.
    aggregate = "string_agg" if conn.dialect == "postgresql" else "group_concat"
    rows = await conn.fetch(
        f"SELECT r.res_type, r.res_id, r.version, r.last_updated, r.deleted, r.content, "
        f"{'r.org_id' if beyond else 'NULL'}, (SELECT {aggregate}(c.patient_id, ' ') FROM compartment c "
        f"WHERE c.res_type = r.res_type AND c.res_id = r.res_id) FROM {source} "
        f"WHERE {where}{group} ORDER BY {order} LIMIT {limit} OFFSET {offset}",
        *builder.sql.args,
    )
    matches = []
    for row in rows[: req.count]:
        stored = stored_row(row)
        stored.patients = frozenset(row[7].split()) if row[7] else frozenset()
        matches.append(stored)
    has_more = len(rows) > req.count
    if total is None and not has_more:
        total = req.offset + len(matches)
    store = Store(conn, org_id, also=also_orgs)
    included = (
        await _includes(store, conn, req, matches) if (req.include or req.revinclude) and matches else []
    )
    if included and admit is not None:
        included = admit(included)
    return SearchResult(matches, included, total, has_more)


async def _includes(store: Any, conn: Conn, req: SearchRequest, matches: list[Stored]) -> list[Stored]:
    seen = {(m.res_type, m.res_id) for m in matches}
    out: list[Stored] = []
    frontier = matches
    for depth in range(3):  # :iterate follows at most three levels
        new: list[Stored] = []
        for inc in req.include:
            if depth > 0 and not inc.iterate:
                continue
            sources = [m for m in frontier if m.res_type == inc.source or inc.source == "*"]
            if not sources:
                continue
            sql = _Sql()
            ids = sql.many([m.res_id for m in sources])
            cond = f"res_type = {sql.p(sources[0].res_type)} AND res_id IN ({ids}) AND target_id IS NOT NULL"
            if inc.param != "*":
                cond += f" AND {_param_test(sql, sources[0].res_type, inc.param)}"
            if inc.target:
                cond += f" AND target_type = {sql.p(inc.target)}"
            refs = await conn.fetch(
                f"SELECT DISTINCT target_type, target_id FROM sp_reference WHERE {cond}", *sql.args
            )
            by_type: dict[str, list[str]] = {}
            for t, i in refs:
                if (t, i) not in seen:
                    by_type.setdefault(t, []).append(i)
            for t, ids_ in by_type.items():
                for s in await store.fetch_many(t, ids_):
                    if (s.res_type, s.res_id) not in seen:
                        seen.add((s.res_type, s.res_id))
                        new.append(s)
        for inc in req.revinclude:
            if depth > 0 and not inc.iterate:
                continue
            targets = list(frontier)
            if not targets:
                continue
            by_target: dict[str, list[str]] = {}
            for m in targets:
                by_target.setdefault(m.res_type, []).append(m.res_id)
            for ttype, tids in by_target.items():
                sql = _Sql()
                cond = (
                    f"res_type = {sql.p(inc.source)} AND target_type = {sql.p(ttype)} "
                    f"AND target_id IN ({sql.many(tids)})"
                )
                if inc.param != "*":
                    cond += f" AND {_param_test(sql, inc.source, inc.param)}"
                rows = await conn.fetch(f"SELECT DISTINCT res_id FROM sp_reference WHERE {cond}", *sql.args)
                fresh = [r[0] for r in rows if (inc.source, r[0]) not in seen]
                for s in await store.fetch_many(inc.source, fresh):
                    seen.add((s.res_type, s.res_id))
                    new.append(s)
        out.extend(new)
        frontier = new
        if not new or not any(i.iterate for i in (*req.include, *req.revinclude)):
            break
    return out
