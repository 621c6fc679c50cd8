"""The database schema, declared once for both engines; Alembic migrations are checked against it.

Resource JSON is stored as bytes exactly as served (``meta.versionId``/``meta.lastUpdated`` already
inside), so a read returns the stored bytes without re-serializing. Nothing ever queries inside the
JSON: every search goes through the ``sp_*`` index tables, which are written in the same transaction
as the resource. Times are microseconds since the Unix epoch (UTC) in BIGINT columns so that both
engines compare them as plain integers.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    text,
)

from housecall.fhir.indexing import NO_DATE_ORDER

metadata = MetaData()

# Byte-wise ordering on PostgreSQL so that prefix searches can use a range scan on a btree whatever
# the database's locale is; SQLite compares with BINARY by default, which is the same thing.
_Text = String().with_variant(String(collation="C"), "postgresql")

resource = Table(
    "resource",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", LargeBinary, nullable=True),
    # The organization (tenant) the resource belongs to; every read names it (fhir/store.py).
    Column("org_id", String(64), nullable=False),
    Index("ix_resource_type_updated", "res_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", LargeBinary, nullable=True),
    Column("org_id", String(64), nullable=False),
    Index("ix_history_updated", "last_updated"),
)


def _owner_index(table: str) -> Index:
    return Index(f"ix_{table}_owner", "res_id", postgresql_using="hash")


def _index_table(name: str, *columns: Column, lookup: tuple[str, ...]) -> Table:
    return Table(
        name,
        metadata,
        Column("res_type", String(64), nullable=False),
        Column("res_id", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
        # A resource's own rows (to replace them, and for _include, _sort and :missing): a hash
        # index on PostgreSQL, where it costs a write about half of a btree on (res_type, res_id)
        # with random ids - the owner lookups are all equality, and res_type is rechecked.
        _owner_index(name),
        # res_id last makes the lookup covering: a filter's id list comes from the index alone.
        Index(f"ix_{name}_lookup", "res_type", "param", *lookup, "res_id"),
    )


# Token rows carry the reference that puts the resource in a patient's compartment, as
# "<param>|<patient id>" (e.g. "subject|123"; one row per such reference, NULL when none), so that
# "this patient's resources with code C" is one exact index range - the shape of nearly every
# clinical query and of every patient-scoped access filter. See docs/decisions/0004.
# The patient comes right after the code in the lookup index, so that a code without its system
# ("status=final", "category=vital-signs") is one range of the patient's rows too, not every
# patient's. The rows also carry the resource's `date` as a sort key, so that one system|code's
# range comes newest first: "this patient's latest readings of code C" (_sort=-date) reads one
# page of the index, however many readings there are. See docs/decisions/0031.
sp_token = _index_table(
    "sp_token",
    Column("system", _Text, nullable=True),
    Column("code", _Text, nullable=True),
    Column("text", _Text, nullable=True),  # normalized display/text, for :text
    Column("pat", String(160), nullable=True),
    # Minus the latest instant (µs) of the resource's `date` parameter; NO_DATE_ORDER without one.
    Column("date_order", BigInteger, nullable=False, server_default=text(str(NO_DATE_ORDER))),
    lookup=("code", "pat", "system", "date_order"),
)
sp_string = _index_table(
    "sp_string",
    Column("norm", _Text, nullable=False),  # accent- and case-folded, for the default prefix match
    Column("exact", _Text, nullable=False),  # as written, for :exact
    lookup=("norm",),
)
sp_reference = _index_table(
    "sp_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", _Text, nullable=True),
    lookup=("target_id", "target_type"),
)
sp_date = _index_table(
    "sp_date",
    Column("lo", BigInteger, nullable=False),
    Column("hi", BigInteger, nullable=False),
    lookup=("lo", "hi"),
)
sp_quantity = _index_table(
    "sp_quantity",
    Column("value", Float, nullable=False),
    Column("system", _Text, nullable=True),
    Column("code", _Text, nullable=True),
    Column("unit", _Text, nullable=True),
    lookup=("value",),
)
sp_number = _index_table("sp_number", Column("value", Float, nullable=False), lookup=("value",))
sp_uri = _index_table("sp_uri", Column("value", _Text, nullable=False), lookup=("value",))

# No separate (target_type, target_id) index: _revinclude, _has and chains name the parameter, so
# the lookup index serves them, and every index costs each write (see migration 0003).

# The patient compartment of every resource, computed on write from the R4 CompartmentDefinition;
# access control filters by it in the same SQL as the search.
compartment = Table(
    "compartment",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    _owner_index("compartment"),
)

# Durable background jobs (core/jobs.py). Times in µs; ``args`` is JSON text of ids, never objects.
job = Table(
    "job",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("args", String, nullable=False),
    Column("state", String(10), nullable=False),  # queued | running | done | failed
    Column("run_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=True),  # a running job's lease
    Column("dedupe_key", String(200), nullable=True, unique=True),
    Column("error", String(100), nullable=True),  # the last failure's exception type, never its message
    Column("created", BigInteger, nullable=False),
    Column("finished", BigInteger, nullable=True),
    Index("ix_job_due", "state", "run_at"),
)

# Platform tables register themselves on the same metadata: identity (accounts, sessions, …), the
# audit trail (append-only events and their hash chain), the SMART authorization server (clients,
# grants, tokens), the access path (break-glass openings) and notifications (preferences, deliveries,
# the local outbox).
import housecall.access.tables  # noqa: E402
import housecall.audit.tables  # noqa: E402
import housecall.identity.tables  # noqa: E402
import housecall.notify.tables  # noqa: E402
import housecall.smart.tables  # noqa: E402
import housecall.visits.tables  # noqa: E402, F401
