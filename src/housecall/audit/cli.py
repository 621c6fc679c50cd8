"""``housecall audit …``: verify the chain, seal pending events, list who opened a record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from housecall.audit import chain, trail
from housecall.core.db import open_database
from housecall.core.settings import get_settings

audit_app = typer.Typer(
    help="The audit trail: verify its hash chain, seal new events, show accesses.", add_completion=False
)
console = Console()
err = Console(stderr=True)


@audit_app.command()
def verify(
    seal: Annotated[
        bool, typer.Option("--seal", help="seal pending events first (as the server does every second)")
    ] = False,
) -> None:
    """Recompute the hash chain; exit 1 naming the first broken event. Unsealed events are reported."""

    async def run() -> tuple[int, chain.Verdict]:
        db = open_database(get_settings().database_url)
        await db.connect()
        try:
            sealed_now = await chain.seal_all(db) if seal else 0
            async with db.reader() as conn:
                return sealed_now, await chain.verify(conn)
        finally:
            await db.close()

    sealed_now, verdict = asyncio.run(run())
    if sealed_now:
        console.print(f"sealed {sealed_now} pending events")
    if not verdict.ok:
        err.print(
            f"[red]✗ audit chain broken at seq {verdict.broken_seq}[/red] (chain position "
            f"{verdict.broken_pos}): {verdict.problem}; the {verdict.sealed} positions before it verify"
        )
        raise typer.Exit(1)
    console.print(f"[green]✓[/green] {verdict.sealed} audit events verify; head {verdict.head.hex()}")
    if verdict.unsealed:
        seqs = ", ".join(map(str, verdict.unsealed_seqs))
        console.print(
            f"[yellow]{verdict.unsealed} events are not sealed yet[/yellow] (seq {seqs}…): "
            "`housecall audit seal` or `audit verify --seal` links them"
        )


@audit_app.command("seal")
def seal_command() -> None:
    """Link every event not yet in the hash chain (the server does this every second)."""

    async def run() -> int:
        db = open_database(get_settings().database_url)
        await db.connect()
        try:
            return await chain.seal_all(db)
        finally:
            await db.close()

    console.print(f"sealed {asyncio.run(run())} events")


@audit_app.command()
def show(
    patient: Annotated[str, typer.Option("--patient", help="Patient id")],
    org: Annotated[str, typer.Option("--org", help="organization id")],
    limit: Annotated[int, typer.Option(help="most recent N accesses")] = 50,
) -> None:
    """Who accessed a patient's record, newest first."""

    async def run() -> list[trail.Access]:
        db = open_database(get_settings().database_url)
        await db.connect()
        try:
            async with db.reader() as conn:
                return await trail.who_viewed(conn, org, patient, limit=limit)
        finally:
            await db.close()

    table = Table(title=f"Accesses to Patient/{patient}")
    for name in ("seq", "recorded (UTC)", "agent", "roles", "action", "what", "outcome"):
        table.add_column(name)
    for a in asyncio.run(run()):
        when = datetime.fromtimestamp(a.recorded / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(a.seq), when, a.agent or "", " ".join(a.agent_display),
                      f"{a.action} {a.interaction}", " ".join(a.what), a.outcome)  # fmt: skip
    console.print(table)
