"""The versioned FHIR resource store: current versions, full history and search-index rows.

Every change is a new version; a delete is a version without content. The current version lives
in ``resource``; when a newer one replaces it, it moves to ``resource_history`` (vread and history
read both), so a create writes its JSON once. Index rows and the patient
compartment are rewritten in the same transaction as the resource, so a search never sees a
resource that is not committed, nor misses one that is.

The store works on a ``Conn`` inside the caller's transaction and never commits: the request or
job that opened the transaction does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from housecall.core.db import Conn
from housecall.core.instants import utc_instant
from housecall.fhir import jsonio
from housecall.fhir.indexing import (
    COMPARTMENT_PATIENT,
    IndexRows,
    date_order,
    extract_index,
    stored_reference,
)

# Column lists of the index tables, in the order IndexRows tuples carry them (after `param`).
INDEX_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "token": (
        ("system", "text"),
        ("code", "text"),
        ("text", "text"),
        ("pat", "text"),
        ("date_order", "int8"),
    ),
    "string": (("norm", "text"), ("exact", "text")),
    "reference": (("target_type", "text"), ("target_id", "text"), ("url", "text")),
    "date": (("lo", "int8"), ("hi", "int8")),
    "quantity": (("value", "float8"), ("system", "text"), ("code", "text"), ("unit", "text")),
    "number": (("value", "float8"),),
    "uri": (("value", "text"),),
}


def now_us() -> int:
    return time.time_ns() // 1000


def instant(us: int) -> str:
    """FHIR ``instant`` for microseconds since the epoch, in UTC with millisecond precision."""
    return utc_instant(us)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Stored:
    res_type: str
    res_id: str
    version: int
    last_updated: int
    deleted: bool
    content: bytes | None
    # The organization the version belongs to, when it was read by a store that also reads other
    # organizations (a patient's Consent granted them); None: the reading store's own organization.
    org_id: str | None = None
    # The patients whose record it is, when the query that read it also read its compartment rows
    # (searches); None: work them out from the content (``access.policy.patients_of``).
    patients: frozenset[str] | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def resource(self) -> dict[str, Any]:
        assert self.content is not None
        return jsonio.loads(self.content)  # type: ignore[no-any-return]


@dataclass(slots=True)
class Write:
    """One new version to store. ``replace`` says whether earlier index rows must be dropped."""

    res_type: str
    res_id: str
    version: int
    last_updated: int
    deleted: bool
    content: bytes | None
    rows: IndexRows | None
    replace: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.res_type, self.res_id)

    def stored(self) -> Stored:
        return Stored(self.res_type, self.res_id, self.version, self.last_updated, self.deleted, self.content)


def stamp(resource: dict[str, Any], res_id: str, version: int, last_updated: int) -> bytes:
    """Set ``id`` and ``meta.versionId``/``meta.lastUpdated`` (server-owned) and serialize."""
    resource["id"] = res_id
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(last_updated)
    resource["meta"] = meta
    return jsonio.dumps(resource)


def version_write(
    resource: dict[str, Any],
    res_id: str,
    version: int,
    *,
    replace: bool,
    when: int | None = None,
) -> Write:
    """Build the write for a new version of a (validated, reference-resolved) resource."""
    last_updated = when if when is not None else now_us()
    content = stamp(resource, res_id, version, last_updated)
    rows = extract_index(resource)
    return Write(resource["resourceType"], res_id, version, last_updated, False, content, rows, replace)


def delete_write(res_type: str, res_id: str, version: int, when: int | None = None) -> Write:
    return Write(res_type, res_id, version, when if when is not None else now_us(), True, None, None, True)


# Index values longer than this are cut (in the INSERT itself, at no cost in Python): PostgreSQL
# cannot put more than ~2.7 KB in a btree entry, and nobody searches by the thousandth character.
MAX_INDEXED_CHARS = 512
# From this many new resources in one chunk on (an import's Bundle), their rows go by COPY (one
# multi-row INSERT carries their JSON as a bytea array, which asyncpg encodes element by element).
# Not for the chunks of an API Bundle (at most bundles.MAX_CHUNK): COPY then the index rows is two
# statements, and the second would wait for the chunk being prepared meanwhile, which holds the
# event loop - one statement per chunk stored Bundles of 100 1.05x as fast.
COPY_AT_LEAST = 150


RESOURCE_COLUMNS = "res_type, res_id, version, last_updated, deleted, content"
# Columns written: the organization (tenant) owning the resource comes first.
WRITE_COLUMNS = f"org_id, {RESOURCE_COLUMNS}"


class Store:
    """Reads and writes one organization's resources on one connection, inside the caller's
    transaction. Every statement names the organization: another organization's resource is
    invisible here, as if it did not exist (ids are unique across organizations, so an id taken
    elsewhere cannot be created again: 409).

    ``also`` names further organizations whose resources the read methods (``read``,
    ``read_version``, ``fetch_many``, ``history``) return as well, each marked with its
    ``org_id``: the organizations where a patient's Consent granted the actor some of their record
    (decision 0010). The caller decides on each of them; writes and locks stay in ``org_id``.
    """

    def __init__(self, conn: Conn, org_id: str, *, also: Sequence[str] = ()) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.org_id = org_id
        self.also = tuple(o for o in dict.fromkeys(also) if o != org_id)

    def _orgs(self, first: int) -> tuple[str, list[str], str]:
        """(condition on org_id with placeholders from ``$first``, its values, extra column)."""
        if not self.also:
            return f"org_id = ${first}", [self.org_id], ""
        orgs = [self.org_id, *self.also]
        marks = ", ".join(f"${first + n}" for n in range(len(orgs)))
        return f"org_id IN ({marks})", orgs, ", org_id"

    # -- reads -------------------------------------------------------------------------------------

    async def read(self, res_type: str, res_id: str) -> Stored | None:
        orgs, values, extra = self._orgs(3)
        row = await self.conn.fetchrow(
            f"SELECT {RESOURCE_COLUMNS}{extra} FROM resource WHERE res_type = $1 AND res_id = $2 AND {orgs}",
            res_type,
            res_id,
            *values,
        )
        return stored_row(row) if row is not None else None

    async def read_version(self, res_type: str, res_id: str, version: int) -> Stored | None:
        orgs, values, extra = self._orgs(4)
        where = f"WHERE res_type = $1 AND res_id = $2 AND version = $3 AND {orgs}"
        row = await self.conn.fetchrow(
            f"SELECT {RESOURCE_COLUMNS}{extra} FROM resource {where} "
            f"UNION ALL SELECT {RESOURCE_COLUMNS}{extra} FROM resource_history {where}",
            res_type,
            res_id,
            version,
            *values,
        )
        return stored_row(row) if row is not None else None

    async def lock_current(self, res_type: str, res_id: str) -> Stored | None:
        """The current version, locked until the transaction ends (SQLite's writer lock already is).
        Only the store's own organization: nothing of another one is ever written.

        On PostgreSQL an id that does not exist yet has no row to lock, so the id itself is locked
        (a transaction-scoped advisory lock) and read again: of several requests creating the same
        id at once, one creates it and the others then update it, instead of failing on the key.
        """
        sql = f"SELECT {RESOURCE_COLUMNS} FROM resource WHERE res_type = $1 AND res_id = $2 AND org_id = $3"
        if self.dialect != "postgresql":
            row = await self.conn.fetchrow(sql, res_type, res_id, self.org_id)
            return stored_row(row) if row is not None else None
        row = await self.conn.fetchrow(sql + " FOR UPDATE", res_type, res_id, self.org_id)
        if row is None:
            await self.lock_name(f"id:{res_type}/{res_id}")
            row = await self.conn.fetchrow(sql + " FOR UPDATE", res_type, res_id, self.org_id)
        return stored_row(row) if row is not None else None

    async def lock_name(self, name: str) -> None:
        """Hold a lock on ``name`` until the transaction ends, for work that has no row to lock
        yet (PostgreSQL advisory lock; SQLite's single writer already serializes everything)."""
        if self.dialect == "postgresql":
            await self.conn.fetchval("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name)

    async def fetch_many(self, res_type: str, ids: Sequence[str], *, deleted: bool = False) -> list[Stored]:
        """Live resources of one type (and deleted ones too when asked), in the order of ``ids``."""
        if not ids:
            return []
        found: dict[str, Stored] = {}
        orgs, values, extra = self._orgs(2)
        if self.dialect == "postgresql":
            # One array parameter: the same statement (prepared and planned once) for any number of ids.
            rows = await self.conn.fetch(
                f"SELECT {RESOURCE_COLUMNS}{extra} FROM resource WHERE res_type = $1 AND {orgs} "
                f"AND res_id = ANY(${2 + len(values)}::text[])" + ("" if deleted else " AND NOT deleted"),
                res_type,
                *values,
                list(dict.fromkeys(ids)),
            )
            found = {row[1]: stored_row(row) for row in rows}
            return [found[i] for i in ids if i in found]
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            first = 2 + len(values)
            marks = ", ".join(f"${first + i}" for i in range(len(chunk)))
            rows = await self.conn.fetch(
                f"SELECT {RESOURCE_COLUMNS}{extra} FROM resource WHERE res_type = $1 AND {orgs} "
                f"AND res_id IN ({marks})" + ("" if deleted else " AND NOT deleted"),
                res_type,
                *values,
                *chunk,
            )
            for row in rows:
                found[row[1]] = stored_row(row)
        return [found[i] for i in ids if i in found]

    async def fetch_keys(self, keys: Sequence[tuple[str, str]]) -> list[Stored]:
        """The current versions, deleted or not, of the resources named by ``keys`` (type, id), of any
        types: one statement on PostgreSQL (a Bundle's existing-id probe)."""
        if self.dialect != "postgresql":
            by_type: dict[str, list[str]] = {}
            for res_type, res_id in keys:
                by_type.setdefault(res_type, []).append(res_id)
            return [s for t, ids in by_type.items() for s in await self.fetch_many(t, ids, deleted=True)]
        if not keys:
            return []
        args: list[Any] = []
        types = _array_param(args, [k[0] for k in keys], "text")
        ids = _array_param(args, [k[1] for k in keys], "text")
        orgs, values, extra = self._orgs(3)
        rows = await self.conn.fetch(
            f"SELECT {RESOURCE_COLUMNS}{extra} FROM resource WHERE (res_type, res_id) IN "
            f"(SELECT * FROM unnest({types}, {ids})) AND {orgs}",
            *args,
            *values,
        )
        return [stored_row(row) for row in rows]

    async def history(
        self, res_type: str | None, res_id: str | None, since: int | None, count: int, offset: int
    ) -> list[Stored]:
        """Versions newest first; instance, type or whole-system history (the other organizations
        of ``also`` only for an instance: a type or the system is one organization's)."""
        clause, args, extra = self._history_filter(res_type, res_id, since)
        rows = await self.conn.fetch(
            f"SELECT {RESOURCE_COLUMNS}{extra} FROM resource {clause} "
            f"UNION ALL SELECT {RESOURCE_COLUMNS}{extra} FROM resource_history {clause} "
            f"ORDER BY last_updated DESC, version DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            *args,
            count,
            offset,
        )
        return [stored_row(r) for r in rows]

    async def count_history(self, res_type: str | None, res_id: str | None, since: int | None) -> int:
        clause, args, _ = self._history_filter(res_type, res_id, since)
        return int(
            await self.conn.fetchval(
                f"SELECT (SELECT count(*) FROM resource {clause}) + (SELECT count(*) FROM resource_history {clause})",
                *args,
            )
        )

    def _history_filter(
        self, res_type: str | None, res_id: str | None, since: int | None
    ) -> tuple[str, list[Any], str]:
        orgs, values, extra = self._orgs(1) if res_id is not None else ("org_id = $1", [self.org_id], "")
        args: list[Any] = list(values)
        where = [orgs]
        for condition, value in (
            ("res_type = ", res_type),
            ("res_id = ", res_id),
            ("last_updated >= ", since),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{condition}${len(args)}")
        return "WHERE " + " AND ".join(where), args, extra

    # -- writes ------------------------------------------------------------------------------------

    async def apply(self, writes: Sequence[Write]) -> None:
        """Store new versions with their history and index rows (one statement per chunk on PG)."""
        await self.plan(writes)()

    def plan(self, writes: Sequence[Write], *, last: bool = False) -> Callable[[], Awaitable[None]]:
        """``apply`` in two steps: what sends ``writes``, their statement already built when it
        fits one (a Bundle builds the next chunk's while the database stores the one before).
        ``last``: the unit of work writes nothing more but writes alongside (its audit event), so
        the statement may wait to go out with them (``Conn.execute_last``)."""
        chunks = _unique_key_chunks(writes)
        if self.dialect == "postgresql" and len(chunks) == 1 and len(writes) < COPY_AT_LEAST:
            *before, (sql, args) = self._pg_statements(chunks[0])

            async def send() -> None:
                for other in before:  # the versions being replaced move to the history first
                    await self.conn.execute(other[0], *other[1])
                await (self.conn.execute_last if last else self.conn.execute)(sql, *args)
                self.conn.note_writes(len(writes))

            return send
        return partial(self._apply_chunks, chunks)

    async def _apply_chunks(self, chunks: list[list[Write]]) -> None:
        for chunk in chunks:
            if self.dialect == "sqlite":
                await self._apply_sqlite(chunk)
            elif len(chunk) >= COPY_AT_LEAST and not any(w.replace for w in chunk):
                await self._copy_pg(chunk)
            else:
                for sql, args in self._pg_statements(chunk):
                    await self.conn.execute(sql, *args)
        self.conn.note_writes(sum(len(chunk) for chunk in chunks))

    async def _copy_pg(self, writes: list[Write]) -> None:
        """Many new resources: COPY the resources (PostgreSQL's bulk path; no ON CONFLICT needed),
        then all their index and compartment rows in one statement. A COPY per index table cost
        two round trips and a statement's set-up each, more than their few dozen rows."""
        org = self.org_id
        await self.conn.copy_rows(
            "resource",
            ("org_id", "res_type", "res_id", "version", "last_updated", "deleted", "content"),
            [(org, w.res_type, w.res_id, w.version, w.last_updated, w.deleted, w.content) for w in writes],
        )
        args: list[Any] = []
        ctes = self._index_ctes(writes, list(INDEX_COLUMNS), args)
        if ctes:
            await self.conn.execute("WITH " + ",\n".join(ctes) + " SELECT 1", *args)

    def _pg_statements(self, writes: list[Write]) -> list[tuple[str, list[Any]]]:
        """The statements (SQL and arguments) that store ``writes`` (no key twice) on PostgreSQL."""
        statements: list[tuple[str, list[Any]]] = []
        args: list[Any] = []

        def arr(values: Sequence[Any], pgtype: str) -> str:
            return _array_param(args, values, pgtype)

        ctes = []
        for label, group, conflict in (
            # New resources: a plain INSERT, so two requests racing to create the same id make the
            # second fail (409) instead of overwriting the first.
            ("w_new", [w for w in writes if not w.replace], ""),
            (
                "w_next",
                [w for w in writes if w.replace],
                " ON CONFLICT (res_type, res_id) DO UPDATE SET version = EXCLUDED.version, "
                "last_updated = EXCLUDED.last_updated, deleted = EXCLUDED.deleted, content = EXCLUDED.content",
            ),
        ):
            if group:
                columns = (
                    arr([self.org_id] * len(group), "text"),
                    arr([w.res_type for w in group], "text"),
                    arr([w.res_id for w in group], "text"),
                    arr([w.version for w in group], "int4"),
                    arr([w.last_updated for w in group], "int8"),
                    arr([w.deleted for w in group], "bool"),
                    arr([w.content for w in group], "bytea"),
                )
                ctes.append(
                    f"{label} AS (INSERT INTO resource ({WRITE_COLUMNS}) SELECT * FROM unnest({', '.join(columns)})"
                    f"{conflict})"
                )
        replaced = [w for w in writes if w.replace]
        if replaced:
            # A separate statement, first: it moves the current versions into the history and drops
            # their index rows (within one statement PostgreSQL would still see the old rows when
            # checking the unique keys of the new ones).
            keys = "(res_type, res_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
            steps = [f"h AS (INSERT INTO resource_history {_MOVE_TO_HISTORY} WHERE {keys})"]
            steps += [
                f"d_{table} AS (DELETE FROM {table} WHERE {keys})"
                for table in (*(f"sp_{k}" for k in INDEX_COLUMNS), "compartment")
            ]
            statements.append(
                (
                    "WITH " + ",\n".join(steps) + " SELECT 1",
                    [[w.res_type for w in replaced], [w.res_id for w in replaced]],
                )
            )
        ctes += self._index_ctes(writes, list(INDEX_COLUMNS), args)
        statements.append(("WITH " + ",\n".join(ctes) + " SELECT 1", args))
        return statements

    @staticmethod
    def _index_ctes(writes: list[Write], kinds: list[str], args: list[Any]) -> list[str]:
        """INSERT CTEs of the index rows of ``kinds`` and the compartment rows of ``writes``,
        their arrays appended to ``args``."""

        def arr(values: Sequence[Any], pgtype: str) -> str:
            return _array_param(args, values, pgtype)

        ctes = []
        for kind in kinds:
            cols = INDEX_COLUMNS[kind]
            flat = _flatten(writes, kind)
            if not flat:
                continue
            owner_types, owner_ids, params, *values = zip(*flat, strict=True)  # columns, in C
            owner_t = arr(owner_types, "text")
            owner_i = arr(owner_ids, "text")
            param = arr(params, "text")
            col_arrays = [arr(values[n], pgtype) for n, (_, pgtype) in enumerate(cols)]
            names = ", ".join(name for name, _ in cols)
            picks = ", ".join(
                f"left(c{n}, {MAX_INDEXED_CHARS})" if pgtype == "text" else f"c{n}"
                for n, (_, pgtype) in enumerate(cols)
            )
            aliases = ", ".join(f"c{n}" for n in range(len(cols)))
            ctes.append(
                f"i_{kind} AS (INSERT INTO sp_{kind} (res_type, res_id, param, {names}) "
                f"SELECT t, i, p, {picks} FROM unnest({owner_t}, {owner_i}, {param}, {', '.join(col_arrays)}) "
                f"AS u(t, i, p, {aliases}))"
            )
        comp = [(w.res_type, w.res_id, p) for w in writes if w.rows is not None for p in w.rows.patients]
        if comp:
            ctes.append(
                "i_compartment AS (INSERT INTO compartment (res_type, res_id, patient_id) SELECT * FROM unnest("
                f"{arr([x[0] for x in comp], 'text')}, {arr([x[1] for x in comp], 'text')}, "
                f"{arr([x[2] for x in comp], 'text')}))"
            )
        return ctes

    async def _apply_sqlite(self, writes: list[Write]) -> None:
        org = self.org_id
        replaced = [w.key for w in writes if w.replace]
        statements: list[tuple[str, list[Any]]] = [
            (
                f"INSERT INTO resource_history {_MOVE_TO_HISTORY} WHERE res_type = $1 AND res_id = $2",
                replaced,
            ),
            *(
                (f"DELETE FROM {table} WHERE res_type = $1 AND res_id = $2", replaced)
                for table in (*(f"sp_{k}" for k in INDEX_COLUMNS), "compartment")
            ),
            (
                f"INSERT INTO resource ({WRITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (org, w.res_type, w.res_id, w.version, w.last_updated, w.deleted, w.content)
                    for w in writes
                    if not w.replace
                ],
            ),
            (
                f"INSERT INTO resource ({WRITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (res_type, res_id) DO UPDATE SET version = excluded.version, "
                "last_updated = excluded.last_updated, deleted = excluded.deleted, content = excluded.content",
                [
                    (org, w.res_type, w.res_id, w.version, w.last_updated, w.deleted, w.content)
                    for w in writes
                    if w.replace
                ],
            ),
        ]
        for kind, cols in INDEX_COLUMNS.items():
            names = ", ".join(name for name, _ in cols)
            marks = ", ".join(
                ["$1", "$2", "$3"]
                + [
                    f"substr(${n + 4}, 1, {MAX_INDEXED_CHARS})" if pgtype == "text" else f"${n + 4}"
                    for n, (_, pgtype) in enumerate(cols)
                ]
            )
            statements.append(
                (
                    f"INSERT INTO sp_{kind} (res_type, res_id, param, {names}) VALUES ({marks})",
                    _flatten(writes, kind),
                )
            )
        comp = [(w.res_type, w.res_id, p) for w in writes if w.rows is not None for p in w.rows.patients]
        statements.append(
            ("INSERT INTO compartment (res_type, res_id, patient_id) VALUES ($1, $2, $3)", comp)
        )
        await self.conn.execute_batch(statements)


# The current version of a resource lives in `resource` only; when a new version replaces it, it
# moves to `resource_history` (so a create writes its JSON once). The method is derived from the
# version as the history Bundle reports it.
_MOVE_TO_HISTORY = (
    "(org_id, res_type, res_id, version, last_updated, deleted, method, content) "
    "SELECT org_id, res_type, res_id, version, last_updated, deleted, "
    "CASE WHEN deleted THEN 'DELETE' WHEN version = 1 THEN 'POST' ELSE 'PUT' END, content FROM resource"
)


# An array parameter of text or numbers travels as one text value that the server splits (unit
# separator between elements, record separator for NULL): asyncpg encodes a list element by element
# with two abstract-base-class checks each, which cost more than all the rest of a Bundle chunk's
# statement on the client. FHIR strings carry no control characters in practice; a column that
# does (or whose only element is empty, which would split to no element) goes as a real array.
_SEP, _NULL = "\x1f", "\x1e"
_SPLIT = "string_to_array(${n}, E'\\x1f', E'\\x1e')"


def _array_param(args: list[Any], values: Sequence[Any], pgtype: str) -> str:
    """Append ``values`` to ``args`` as the ``pgtype[]`` parameter; return its SQL expression."""
    if pgtype in ("text", "int4", "int8", "float8"):
        nulls = values.count(None)
        try:
            items = values if not nulls else [_NULL if v is None else v for v in values]
            joined = _SEP.join(items if pgtype == "text" else map(str, items))
        except TypeError:
            joined = ""
        if joined and joined.count(_SEP) == len(values) - 1 and joined.count(_NULL) == nulls:
            args.append(joined)
            split = _SPLIT.format(n=len(args))
            return split if pgtype == "text" else f"{split}::{pgtype}[]"
    args.append(list(values))
    return f"${len(args)}::{pgtype}[]"


def stored_row(row: Sequence[Any]) -> Stored:
    content = row[5]
    if content is not None and not isinstance(content, bytes):
        content = bytes(content)
    return Stored(row[0], row[1], row[2], row[3], bool(row[4]), content, row[6] if len(row) > 6 else None)


def _flatten(writes: Iterable[Write], kind: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for w in writes:
        if w.rows is None:
            continue
        if kind == "token":
            # One copy per compartment reference (see schema.sp_token); almost always exactly one.
            links: list[str | None] = [*compartment_links(w.res_type, w.rows)] or [None]
            order = date_order(w.rows)
            for row in w.rows.token:
                for pat in links:
                    out.append((w.res_type, w.res_id, *row, pat, order))
            continue
        for row in getattr(w.rows, kind):
            out.append((w.res_type, w.res_id, *row))
    return out


@cache
def _compartment_rows(res_type: str) -> dict[str, tuple[str, ...]]:
    """The compartment parameters of ``res_type`` by the ``param`` of the rows that hold them."""
    by_row: dict[str, tuple[str, ...]] = {}
    for param in COMPARTMENT_PATIENT.get(res_type, ()):
        stored_as = stored_reference(res_type, param)[0]
        by_row[stored_as] = (*by_row.get(stored_as, ()), param)
    return by_row


def compartment_links(res_type: str, rows: IndexRows) -> list[str]:
    """``param|patient-id`` for each reference that puts the resource in a patient compartment (a
    parameter stored as another's rows, such as Encounter's ``patient``, is read from those)."""
    by_row = _compartment_rows(res_type)
    return sorted(
        {
            f"{param}|{target}"
            for stored_as, kind, target, _ in rows.reference
            if kind == "Patient" and target and stored_as in by_row
            for param in by_row[stored_as]
        }
    )


def _unique_key_chunks(writes: Sequence[Write]) -> list[list[Write]]:
    """Split so that no chunk touches the same resource twice (one upsert per row per statement)."""
    chunks: list[list[Write]] = [[]]
    seen: set[tuple[str, str]] = set()
    for w in writes:
        if w.key in seen:
            chunks.append([])
            seen = set()
        seen.add(w.key)
        chunks[-1].append(w)
    return [c for c in chunks if c]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
