"""Storing and querying the audit trail (``audit_log``; append-only, see ``tables.py``).

Two ways in, both durable before they return:

- ``append(conn, entries)`` writes inside the caller's transaction: a write and its event commit
  or vanish together, in one commit (on PostgreSQL a single write and its event are even one
  statement). The FHIR API uses it for successful writes.
- ``AuditSink.record(entries)`` writes in its own short transaction, group-committed with the
  events of concurrent requests (one INSERT for all of them). Use it for reads and searches, which
  run outside any write transaction, and for every denied or failed request - an event appended
  to a transaction that then rolls back would vanish with it.

Neither touches the hash chain: the sealer (``chain.py``) links committed events shortly after,
so appending takes no lock shared between requests (docs/decisions/0007-audit-trail.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from housecall.audit.events import AuditEntry
from housecall.core.db import Conn, Database

log = logging.getLogger(__name__)

_INSERT = "INSERT INTO audit_log (org_id, recorded, patient_id, agent, event) VALUES ($1, $2, $3, $4, $5)"
# PostgreSQL: any number of events in one statement (and so one round trip, no BEGIN/COMMIT).
_INSERT_PG = (
    "INSERT INTO audit_log (org_id, recorded, patient_id, agent, event) "
    "SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::bytea[])"
)


async def append(conn: Conn, entries: Sequence[AuditEntry]) -> None:
    """Append ``entries`` in the caller's unit of work (it commits them, or drops them on rollback)."""
    if not entries:
        return
    if len(entries) == 1:
        e = entries[0]
        await conn.execute_alongside(_INSERT, e.org_id, e.recorded, e.patient_id, e.agent, e.event)
    elif conn.dialect == "postgresql":
        await conn.execute_alongside(
            _INSERT_PG,
            [e.org_id for e in entries],
            [e.recorded for e in entries],
            [e.patient_id for e in entries],
            [e.agent for e in entries],
            [e.event for e in entries],
        )
    else:
        await conn.executemany(
            _INSERT, [(e.org_id, e.recorded, e.patient_id, e.agent, e.event) for e in entries]
        )


class AuditSink:
    """Group commit of events recorded outside a write transaction (reads, searches, denials).

    ``record`` returns once its events are committed. While one batch is being written the next
    requests' events queue, and the next batch takes them all: concurrent readers share one INSERT
    and one commit instead of one each. On SQLite the batch goes through the single writer, so
    readers never contend for SQLite's file lock.

    Events that are not urgent (a successful read or search: ``AuditEntry.urgent``) are not waited
    for unless ``wait_always`` (``HOUSECALL_AUDIT_WAIT_FOR_READS``): ``record`` returns at once and
    they follow in a batch written within ``LINGER`` (5 ms), so one commit carries many requests'
    events - at the price of losing the last few milliseconds of read events if the process is
    killed. A failed batch of them is retried a few times, then logged as lost. Waiting for every
    read's event cost about a third of the HTTP read rate (bench/bench_audit_http.py).
    """

    RETRIES = 3
    LINGER = 0.005  # seconds a batch nobody waits for collects before it is written

    def __init__(self, db: Database, in_flight: int | None = None, *, wait_always: bool = False) -> None:
        self._db = db
        self.wait_always = wait_always
        self._queue: list[_Queued] = []
        self._writers: set[asyncio.Task[None]] = set()
        # Batches committing at once. While they commit the next requests' events collect, so
        # batches grow with the load. PostgreSQL overlaps the commits of a few (measured over HTTP:
        # bench_audit_http.py); SQLite has one writer, so a second batch would only wait for it.
        self._in_flight = in_flight or (4 if db.dialect == "postgresql" else 1)

    async def record(self, entries: Sequence[AuditEntry], *, wait: bool | None = None) -> None:
        """Store ``entries``; by default wait for the commit only when one of them is urgent (a
        write, a denial, a failure) or the sink was told to wait for every event."""
        if not entries:
            return
        if wait is None:
            wait = self.wait_always or any(e.urgent for e in entries)
        future: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if wait else None
        self._queue.append(_Queued(entries, future))
        # Events nobody waits for ride with any writer already running (it takes everything
        # queued when it next writes); starting one each would split them into batches of one.
        if (future is not None or not self._writers) and len(self._writers) < self._in_flight:
            writer = asyncio.get_running_loop().create_task(self._drain())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        if future is not None:
            # shield: a client that disconnects does not cancel the batch its event is in.
            await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                if all(item.future is None for item in self._queue):
                    # Nobody waits: linger a moment so one commit carries many requests' events.
                    await asyncio.sleep(self.LINGER)
                batch, self._queue = self._queue, []
                rows = [e for item in batch for e in item.entries]
                try:
                    async with self._db.transaction() as conn:
                        await append(conn, rows)
                except Exception as exc:
                    retry = []
                    for item in batch:
                        if item.future is not None:
                            if not item.future.done():
                                item.future.set_exception(exc)
                        elif item.attempts < self.RETRIES:
                            item.attempts += 1
                            retry.append(item)
                        else:
                            log.error("%d audit events could not be stored and are lost", len(item.entries))
                    if retry:
                        log.warning("storing %d audit events failed; retrying", len(retry), exc_info=True)
                        self._queue[:0] = retry
                        await asyncio.sleep(0.5)
                else:
                    for item in batch:
                        if item.future is not None and not item.future.done():
                            item.future.set_result(None)
        finally:
            # At once, not in a done-callback: a record() arriving before the callback ran would
            # otherwise see a writer that is already gone and leave its events queued.
            self._writers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def close(self) -> None:
        """Wait for the events already queued (the server's shutdown calls it)."""
        while self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)


@dataclass(slots=True)
class _Queued:
    entries: Sequence[AuditEntry]
    future: asyncio.Future[None] | None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Access:
    """One line of "who looked at my record"."""

    seq: int
    recorded: int  # µs since the epoch, UTC
    agent: str | None  # Practitioner/…, RelatedPerson/…, account/…, client/…
    agent_display: list[str]  # roles and the app, for the portal to phrase
    action: str  # C R U D E
    interaction: str  # read, search-type, update, …
    what: list[str]  # resources acted on, when the event names them
    outcome: str  # "0" allowed, "4" denied or not found, "8" failed
    # The organization the request was made in (``source.site``): another one than the record's
    # when a clinician there read it through the patient's Consent (decision 0010).
    site: str | None = None

    @classmethod
    def from_row(cls, seq: int, recorded: int, agent: str | None, event: bytes) -> Access:
        ev: dict[str, Any] = orjson.loads(event)
        display: list[str] = []
        for a in ev.get("agent", []):
            for role in a.get("role", []):
                display += [c["code"] for c in role.get("coding", [])]
            ident = a.get("who", {}).get("identifier", {})
            if ident.get("system") == "urn:housecall:oauth-client":
                display.append(f"app:{ident.get('value')}")
        what = [
            e["what"]["reference"]
            for e in ev.get("entity", [])
            if "what" in e and e.get("role", {}).get("code") != "1"
        ]
        subtype = ev.get("subtype") or [{}]
        return cls(seq, recorded, agent, display, ev.get("action", ""), subtype[0].get("code", ""),
                   what, ev.get("outcome", ""), (ev.get("source") or {}).get("site"))  # fmt: skip


async def who_viewed(
    conn: Conn,
    org_id: str,
    patient_id: str,
    since: int | None = None,
    limit: int = 100,
    *,
    exclude_agent: str | None = None,
) -> list[Access]:
    """Accesses to one patient's record in one organization, newest first.

    ``since`` is µs since the epoch; ``exclude_agent`` drops one agent (the patient's own
    ``Patient/…`` when the portal shows "others who looked"). One index range on
    ``ix_audit_log_patient``; the caller has already decided the viewer may see this list.
    """
    rows = await conn.fetch(
        "SELECT seq, recorded, agent, event FROM audit_log WHERE org_id = $1 AND patient_id = $2 "
        "AND recorded >= $3 AND (agent IS NULL OR agent <> $4) ORDER BY recorded DESC, seq DESC LIMIT $5",
        org_id,
        patient_id,
        since or 0,
        exclude_agent or "",
        limit,
    )
    return [Access.from_row(int(r[0]), int(r[1]), r[2], bytes(r[3])) for r in rows]


def sink_for(state: Any) -> AuditSink:
    """The application's sink (``app.state``), made on first use for the database it holds."""
    sink: AuditSink | None = getattr(state, "audit_sink", None)
    if sink is None or sink._db is not state.db:
        settings = getattr(state, "settings", None)
        wait_always = bool(getattr(settings, "audit_wait_for_reads", False))
        sink = state.audit_sink = AuditSink(state.db, wait_always=wait_always)
    return sink
