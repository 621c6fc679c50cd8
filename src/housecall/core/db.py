"""One small async database interface over asyncpg (PostgreSQL) and sqlite3 on
its own thread per connection (SQLite).

The resource store writes SQL once, with ``$1``-style placeholders; on SQLite they become ``?1``.
Why not SQLAlchemy's async engine on the request path: see docs/decisions/0002-raw-drivers-on-hot-path.md
(SQLAlchemy still declares the schema, and Alembic migrates it).

Transactions: ``async with db.transaction() as conn`` is the unit of work of one request or job;
it commits when the block ends and rolls back on any exception. ``async with db.reader() as conn``
is for read-only work. SQLite has one writer at a time (its own rule); readers run beside it (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

_PLACEHOLDER = re.compile(r"\$(\d+)")
log = logging.getLogger(__name__)
ANALYZE_FIRST, ANALYZE_LAST = 500, 4_000_000
# VACUUM as well as ANALYZE: it also marks the new pages all-visible, so searches answer from the
# lookup indexes alone (index-only scans) instead of visiting the table for every id.
STORE_TABLES = (
    "resource", "resource_history", "compartment", "sp_token", "sp_string", "sp_reference", "sp_date",
    "sp_quantity", "sp_number", "sp_uri",
)  # fmt: skip
ANALYZE_SQL = f"VACUUM (ANALYZE) {', '.join(STORE_TABLES)}"


class DatabaseUnavailable(Exception):
    """The database could not be reached; the API answers 503 and the client may retry."""


class Conn(Protocol):
    dialect: str

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def execute_alongside(self, sql: str, *args: Any) -> None: ...
    async def execute_last(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def execute_batch(self, statements: list[tuple[str, list[Any]]]) -> None: ...
    def note_writes(self, n: int) -> None: ...
    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...


@dataclass(frozen=True)
class DatabaseURL:
    dialect: str  # "sqlite" | "postgresql"
    path: str  # SQLite file path, or the PostgreSQL DSN for asyncpg/psycopg

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"not a database URL: {url!r}")
        base = scheme.split("+", 1)[0]
        if base == "sqlite":
            # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
            path = rest[1:] if rest.startswith("/") else rest
            if not path or path == ":memory:":
                raise ValueError("SQLite needs a file path (the store is shared by connections)")
            return cls("sqlite", path)
        if base in ("postgresql", "postgres"):
            return cls("postgresql", f"postgresql://{rest}")
        raise ValueError(f"unsupported database: {scheme!r} (use sqlite:///path or postgresql://...)")

    @property
    def sqlalchemy_url(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        return "postgresql+psycopg://" + self.path.split("://", 1)[1]


class StatementCounter:
    """Statements sent to the database; tests assert it on hot paths (no N+1)."""

    statements: int = 0


class Database:
    dialect: str
    counter: StatementCounter

    def note_writes(self, n: int) -> None:
        """Told by the store how many resource versions a unit of work wrote."""

    def defer_statistics(self) -> None:
        """A bulk load writes through this database: gather the planner's statistics once, when it
        is closed, rather than each time the tables double while it writes."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...

    def transaction(self) -> Any: ...
    def reader(self) -> Any: ...


# --------------------------------------------------------------------------------------------------
# PostgreSQL


class _PgConn:
    dialect = "postgresql"

    def __init__(self, conn: Any, counter: StatementCounter, db: Database | None = None) -> None:
        self._c = conn
        self._n = counter
        self._db = db

    def note_writes(self, n: int) -> None:
        if self._db is not None:
            self._db.note_writes(n)

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        self._n.statements += 1
        return await self._c.fetch(sql, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        self._n.statements += 1
        return await self._c.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._n.statements += 1
        return await self._c.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        self._n.statements += 1
        status = await self._c.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def execute_alongside(self, sql: str, *args: Any) -> None:
        """A write that reads nothing and that no other statement of the unit of work reads or
        changes (an audit event): a unit of work may send it inside another statement."""
        await self.execute(sql, *args)

    async def execute_last(self, sql: str, *args: Any) -> None:
        """A write whose result nobody reads, which the caller expects to be the unit of work's
        last but for writes alongside it: a unit of work may hold it back and send them together."""
        await self.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._n.statements += 1
            await self._c.executemany(sql, rows)

    async def execute_batch(self, statements: list[tuple[str, list[Any]]]) -> None:
        for sql, rows in statements:
            await self.executemany(sql, rows)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._n.statements += 1
        await self._c.copy_records_to_table(table, records=rows, columns=list(columns))


class _PgUnitOfWork(_PgConn):
    """A transaction that costs one round trip when the unit of work is a single write.

    ``BEGIN`` is not sent up front. A first ``execute`` (whose result nobody reads) is held back:
    if the block ends with nothing else done, it runs alone - one statement is atomic on its own -
    and its error, if any, surfaces as the block exits. Any further statement, or any read, first
    opens a real transaction (``BEGIN``, then the held statement). A create is therefore one round
    trip instead of three, and every multi-statement unit of work is still all-or-nothing.

    In an open transaction ``execute_last`` holds its write the same way, until the next statement
    or the end: the writes alongside it (a Bundle's audit event after its last chunk of creates)
    join it instead of costing a round trip of their own.
    """

    def __init__(self, conn: Any, counter: StatementCounter, db: Database) -> None:
        super().__init__(conn, counter, db)
        self._state = "idle"  # idle -> held -> open
        self._held: tuple[str, tuple[Any, ...]] | None = None

    async def _open(self) -> None:
        """Make sure the transaction is open and nothing is held back: any statement may read
        what the held one writes."""
        if self._state != "open":
            await self._c.execute("BEGIN")
            self._state = "open"
        held, self._held = self._held, None
        if held is not None:
            await super().execute(held[0], *held[1])

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        await self._open()
        return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        await self._open()
        return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._open()
        return await super().fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        if self._state == "idle":
            self._held = (sql, args)
            self._state = "held"
            return -1  # not known yet; callers of a first write do not read it
        await self._open()
        return await super().execute(sql, *args)

    async def execute_last(self, sql: str, *args: Any) -> None:
        if self._state == "idle":
            await self.execute(sql, *args)
            return
        await self._open()
        self._held = (sql, args)

    async def execute_alongside(self, sql: str, *args: Any) -> None:
        # Held with the held write: both go as one statement (each a CTE), so a write and its
        # audit event still cost one round trip (and one commit).
        if self._held is not None:
            merged = _merge_writes(self._held, (sql, args))
            if merged is not None:
                self._held = merged
                return
        await self.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._open()
        await super().executemany(sql, rows)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        await self._open()
        await super().copy_rows(table, columns, rows)

    async def finish(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await super().execute(held[0], *held[1])
        if self._state == "open":
            await self._c.execute("COMMIT")

    async def abort(self) -> None:
        self._held = None
        if self._state == "open":
            await self._c.execute("ROLLBACK")


def _as_ctes(sql: str, label: str) -> str | None:
    """The statement as a list of data-modifying CTEs (``WITH … SELECT 1`` or a plain INSERT),
    or None when it cannot be one."""
    if sql.startswith("WITH ") and sql.endswith(" SELECT 1"):
        return sql[len("WITH ") : -len(" SELECT 1")]
    if sql.startswith("INSERT ") and " RETURNING " not in sql:
        return f"{label} AS ({sql})"
    return None


def _merge_writes(
    first: tuple[str, tuple[Any, ...]], second: tuple[str, tuple[Any, ...]]
) -> tuple[str, tuple[Any, ...]] | None:
    """One statement doing both writes, the second's parameters renumbered after the first's."""
    offset = len(first[1])
    head = _as_ctes(first[0], "also_0")
    tail = _as_ctes(_PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", second[0]), f"also_{offset}")
    if head is None or tail is None:
        return None
    return f"WITH {head},\n{tail} SELECT 1", (*first[1], *second[1])


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: nothing to undo. The store never changes session state (no SET or LISTEN;
    its advisory locks are transaction-scoped and end with the transaction), so the default reset
    query would be a wasted round trip per request."""


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.counter = StatementCounter()
        self._pool: Any = None
        self._writes = 0
        self._analyze_at = ANALYZE_FIRST
        self._analyzing: asyncio.Task[None] | None = None
        self._deferred = False

    def defer_statistics(self) -> None:
        # Each pass vacuums and analyzes every table of the store: the five passes of a 10,000-
        # resource import cost PostgreSQL ~0.4 s of CPU, the last one alone ~0.25 s.
        self._deferred = True

    def note_writes(self, n: int) -> None:
        # The planner needs statistics to drive a search from its most selective index; on a
        # young, fast-growing store autovacuum (one pass a minute, after 10% growth) lags far
        # behind, and a plan made for empty tables probes thousands of rows instead of dozens.
        # So the store vacuums and analyzes its own tables as they double in size, until
        # autovacuum's proportional thresholds are close enough.
        self._writes += n
        if self._deferred:
            return
        if self._writes >= self._analyze_at and self._analyzing is None and self._analyze_at <= ANALYZE_LAST:
            self._analyze_at *= 2
            self._analyzing = asyncio.get_running_loop().create_task(self._analyze())

    async def _analyze(self) -> None:
        try:
            async with self._acquire() as conn:
                await conn.execute(ANALYZE_SQL)
        except Exception:  # statistics are an optimisation; never fail a request over them
            log.warning("ANALYZE of the store's tables failed", exc_info=True)
        finally:
            self._analyzing = None

    async def connect(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                statement_cache_size=512,
                # The store's lookups are index probes on SSD-backed storage; the default cost of
                # 4.0 per random page makes the planner prefer scanning whole tables.
                server_settings={"random_page_cost": "1.1"},
                reset=_keep_session,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def _analyze_apart(self) -> None:
        """``ANALYZE_SQL`` one table at a time on two connections at once, largest first: the pass
        at the end of an import runs when nothing else does, so two database processes share it."""
        async with self._acquire() as conn:
            sizes = await conn.fetch(
                "SELECT relname FROM pg_class WHERE relname = ANY($1::text[]) AND relkind = 'r' "
                "ORDER BY pg_total_relation_size(oid) DESC",
                list(STORE_TABLES),
            )
        tables = [row[0] for row in sizes]

        async def work() -> None:
            async with self._acquire() as conn:
                while tables:
                    await conn.execute(f"VACUUM (ANALYZE) {tables.pop(0)}")

        try:
            await asyncio.gather(work(), work())
        except Exception:  # statistics are an optimisation; never fail an import over them
            log.warning("ANALYZE of the store's tables failed", exc_info=True)

    async def close(self) -> None:
        if self._analyzing is not None:
            await self._analyzing
        if self._deferred and self._writes >= ANALYZE_FIRST and self._pool is not None:
            await self._analyze_apart()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        import asyncpg

        try:
            conn = await self._pool.acquire()
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._acquire() as conn:
            unit = _PgUnitOfWork(conn, self.counter, self)
            try:
                yield unit
            except BaseException:
                await unit.abort()
                raise
            await unit.finish()

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Conn]:
        async with self._acquire() as conn:
            yield _PgConn(conn, self.counter)


# --------------------------------------------------------------------------------------------------
# SQLite


def _sqlite_sql(sql: str, _cache: dict[str, str] = {}) -> str:  # noqa: B006 - deliberate memo
    out = _cache.get(sql)
    if out is None:
        out = _cache[sql] = _PLACEHOLDER.sub(r"?\1", sql)
    return out


class _SqliteThread:
    """One sqlite3 connection owned by one thread; each call is a single hop to that thread.

    (aiosqlite makes several hops per statement - execute, fetch, close - which costs more than
    the query itself for the store's small indexed statements.)
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        self._conn = conn

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self.call(self._open)

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None

        await self.call(_close)
        self._pool.shutdown(wait=True)

    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "connection not open"
        return self._conn


class _SqliteConn:
    dialect = "sqlite"

    def __init__(self, worker: _SqliteThread, counter: StatementCounter) -> None:
        self._w = worker
        self._n = counter

    def note_writes(self, n: int) -> None:
        """SQLite plans well without fresh statistics (and `PRAGMA optimize` runs on close)."""

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        self._n.statements += 1
        c = self._w.conn()
        return await self._w.call(lambda: c.execute(_sqlite_sql(sql), args).fetchall())  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        self._n.statements += 1
        c = self._w.conn()
        return await self._w.call(lambda: c.execute(_sqlite_sql(sql), args).fetchone())  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return row[0] if row is not None else None

    async def execute(self, sql: str, *args: Any) -> int:
        self._n.statements += 1
        c = self._w.conn()
        return await self._w.call(lambda: c.execute(_sqlite_sql(sql), args).rowcount)  # type: ignore[no-any-return]

    async def execute_alongside(self, sql: str, *args: Any) -> None:
        await self.execute(sql, *args)

    async def execute_last(self, sql: str, *args: Any) -> None:
        await self.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._n.statements += 1
            c = self._w.conn()
            await self._w.call(lambda: c.executemany(_sqlite_sql(sql), rows))

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join(f"${n + 1}" for n in range(len(columns)))
        await self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    async def execute_batch(self, statements: list[tuple[str, list[Any]]]) -> None:
        """Several executemany calls in one hop to the connection's thread (SQLite only)."""
        self._n.statements += sum(1 for _, rows in statements if rows)
        c = self._w.conn()

        def run() -> None:
            for sql, rows in statements:
                if rows:
                    c.executemany(_sqlite_sql(sql), rows)

        await self._w.call(run)


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # FULL: a commit is on disk when it returns; an answered 201 survives kill -9 and power loss.
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-65536",
)


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str, readers: int = 2) -> None:
        self.path = path
        self.n_readers = readers
        self._writer: _SqliteThread | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[_SqliteThread] = asyncio.Queue()
        self._all: list[_SqliteThread] = []
        self.counter = StatementCounter()

    async def _open(self) -> _SqliteThread:
        worker = _SqliteThread(self.path)
        await worker.open()
        self._all.append(worker)
        return worker

    async def connect(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._open()
        for _ in range(self.n_readers):
            self._readers.put_nowait(await self._open())

    async def close(self) -> None:
        for worker in self._all:
            await worker.close()
        self._all.clear()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        assert self._writer is not None
        async with self._write_lock:
            conn = _SqliteConn(self._writer, self.counter)
            # IMMEDIATE takes the write lock at BEGIN, so a read-then-write inside the block can
            # never be overtaken by another writer (no lost updates, no SQLITE_BUSY mid-way).
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Conn]:
        worker = await self._readers.get()
        try:
            yield _SqliteConn(worker, self.counter)
        finally:
            self._readers.put_nowait(worker)


def open_database(url: str, pool_size: int = 10) -> Database:
    parsed = DatabaseURL.parse(url)
    if parsed.dialect == "sqlite":
        return SqliteDatabase(parsed.path)
    return PostgresDatabase(parsed.path, pool_size=pool_size)
