"""The hash chain over the audit trail: sealing committed events, and verifying the chain.

Chain position ``pos`` seals event ``seq`` with ``hash = SHA-256(previous hash ‖ canonical row)``,
the first previous hash being 32 zero bytes. The canonical row is every column of ``audit_log``
(seq, org_id, recorded, patient_id, agent, and the event bytes as stored), so changing any byte of
a sealed event, deleting one, or editing a stored hash breaks the chain from that position on.

Sealing happens after the insert, in a short transaction of its own (a background task in the
server, ``housecall audit seal`` and ``audit verify --seal`` otherwise): appending an event never
waits for a lock shared by all requests. Positions follow the order the sealer finds events in,
so an event whose transaction committed late is sealed on a later pass, at a later position.
Until it is sealed an event is covered by nothing; verify reports how many there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from housecall.core.db import Conn, Database

log = logging.getLogger(__name__)

GENESIS = bytes(32)
# Key of the PostgreSQL advisory lock that makes sealers of several processes take turns.
SEAL_LOCK = 0x4843_4155_4449_54  # "HCAUDIT"
# The background sealer looks this many events below the newest sealed one for events that
# committed late; a full pass (``seal(full=True)``) looks at all of them.
LOOKBACK = 5000
BATCH = 5000
_ROW_COLUMNS = "a.seq, a.org_id, a.recorded, a.patient_id, a.agent, a.event"


def canonical(seq: int, org_id: str, recorded: int, patient_id: str | None, agent: str | None,
              event: bytes) -> bytes:  # fmt: skip
    """Unambiguous bytes of one row: fixed-width integers and length-prefixed strings."""

    def text(value: str | None) -> bytes:
        if value is None:
            return b"\xff\xff\xff\xff"
        raw = value.encode()
        return struct.pack(">I", len(raw)) + raw

    return struct.pack(">qq", seq, recorded) + text(org_id) + text(patient_id) + text(agent) + event


def link(prev: bytes, row: Sequence[Any]) -> bytes:
    seq, org_id, recorded, patient_id, agent, event = row
    return hashlib.sha256(
        prev + canonical(int(seq), org_id, int(recorded), patient_id, agent, bytes(event))
    ).digest()


async def _head(conn: Conn) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT pos, hash FROM audit_seal ORDER BY pos DESC LIMIT 1")
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


async def _unsealed(conn: Conn, above: int, limit: int) -> list[Sequence[Any]]:
    return await conn.fetch(
        f"SELECT {_ROW_COLUMNS} FROM audit_log a WHERE a.seq > $1 AND NOT EXISTS "
        "(SELECT 1 FROM audit_seal s WHERE s.seq = a.seq) ORDER BY a.seq LIMIT $2",
        above,
        limit,
    )


async def seal(conn: Conn, *, full: bool = False, limit: int = BATCH) -> int:
    """Link up to ``limit`` unsealed events to the chain, in the caller's transaction; returns how
    many. ``full`` looks at every event instead of the recent window."""
    if conn.dialect == "postgresql":
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SEAL_LOCK)
    pos, prev = await _head(conn)
    above = -1
    if not full:
        top = await conn.fetchval("SELECT max(seq) FROM audit_seal")
        above = (int(top) - LOOKBACK) if top is not None else -1
    rows = await _unsealed(conn, above, limit)
    seals = []
    for row in rows:
        pos += 1
        prev = link(prev, row)
        seals.append((pos, int(row[0]), prev))
    if seals:
        await conn.executemany("INSERT INTO audit_seal (pos, seq, hash) VALUES ($1, $2, $3)", seals)
    return len(seals)


async def seal_all(db: Database, *, full: bool = True) -> int:
    """Seal until nothing is left (one short transaction per batch)."""
    total = 0
    while True:
        async with db.transaction() as conn:
            n = await seal(conn, full=full)
        total += n
        if n < BATCH:
            return total


@dataclass
class Verdict:
    sealed: int = 0  # chain positions checked
    head: bytes = GENESIS  # hash at the last position: record it elsewhere to detect truncation
    broken_seq: int | None = None
    broken_pos: int | None = None
    problem: str | None = None
    unsealed: int = 0
    unsealed_seqs: list[int] = field(default_factory=list)  # the first few

    @property
    def ok(self) -> bool:
        return self.problem is None


async def verify(conn: Conn, *, page: int = 5000) -> Verdict:
    """Walk the chain from position 1, recomputing every hash from the stored rows; stop at the
    first break. Then count the events no position seals yet."""
    verdict = Verdict()
    prev, expected_pos = GENESIS, 1
    while True:
        rows = await conn.fetch(
            f"SELECT s.pos, s.seq, s.hash, {_ROW_COLUMNS} FROM audit_seal s "
            "LEFT JOIN audit_log a ON a.seq = s.seq WHERE s.pos >= $1 ORDER BY s.pos LIMIT $2",
            expected_pos,
            page,
        )
        for r in rows:
            pos, seq, stored = int(r[0]), int(r[1]), bytes(r[2])
            if pos != expected_pos:
                return _broken(verdict, seq, expected_pos, f"chain position {expected_pos} is missing")
            if r[3] is None:
                return _broken(verdict, seq, pos, "the sealed event is missing (deleted)")
            computed = link(prev, r[3:])
            if computed != stored:
                return _broken(verdict, seq, pos, "the event's bytes do not match its seal")
            prev, expected_pos = stored, pos + 1
            verdict.sealed, verdict.head = pos, stored
        if len(rows) < page:
            break
    verdict.unsealed = int(
        await conn.fetchval(
            "SELECT count(*) FROM audit_log a WHERE NOT EXISTS (SELECT 1 FROM audit_seal s WHERE s.seq = a.seq)"
        )
    )
    if verdict.unsealed:
        verdict.unsealed_seqs = [int(r[0]) for r in await _unsealed(conn, -1, 5)]
    return verdict


def _broken(verdict: Verdict, seq: int, pos: int, problem: str) -> Verdict:
    verdict.broken_seq, verdict.broken_pos, verdict.problem = seq, pos, problem
    return verdict


class Sealer:
    """Seals new events every ``interval`` seconds while the server runs (one per process; the
    advisory lock makes the processes of one PostgreSQL database take turns).

    Most passes look at the recent window only; the first pass and every ``FULL_EVERY``-th look at
    the whole trail, so an event that committed very late (or while no server ran) is sealed too.
    Whether there is anything to seal is asked on a reader first: on SQLite the writer is only
    taken when there is work."""

    FULL_EVERY = 600

    def __init__(self, db: Database, interval: float = 1.0) -> None:
        self._db = db
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        passes = 0
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.seal_pending(full=passes % self.FULL_EVERY == 0)
                passes += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass is retried on the next tick; verify reports gaps
                log.warning("sealing the audit trail failed; retrying", exc_info=True)

    async def seal_pending(self, *, full: bool = False) -> int:
        async with self._db.reader() as conn:
            above = -1
            if not full:
                top = await conn.fetchval("SELECT max(seq) FROM audit_seal")
                above = (int(top) - LOOKBACK) if top is not None else -1
            pending = await _unsealed(conn, above, 1)
        if not pending:
            return 0
        return await seal_all(self._db, full=full)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.seal_pending()
        except Exception:
            log.warning("sealing the audit trail at shutdown failed", exc_info=True)
