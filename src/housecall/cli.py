"""The ``housecall`` command: serve, demo, migrate, import, export, backup, restore, check."""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from housecall.core import migrate as migrations
from housecall.core.db import Database, DatabaseURL, open_database
from housecall.core.runtime import tune_gc
from housecall.core.settings import Settings, get_settings
from housecall.fhir import loader
from housecall.fhir.store import now_us

if TYPE_CHECKING:
    from typer._click import Command, Context  # the click Typer bundles

# The command groups other packages define, imported only when one of them runs or the command
# list is shown: `housecall import` or `serve` would otherwise load the OAuth, identity and audit
# command code (and JOSE) first, a tenth of the process start.
_GROUPS = {
    "audit": ("housecall.audit.cli", "audit_app"),
    "client": ("housecall.smart.cli", "client_app"),
    "org": ("housecall.identity.cli", "org_app"),  # identity_commands
    "user": ("housecall.identity.cli", "user_app"),  # identity_commands
}


class _Commands(TyperGroup):
    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *_GROUPS]

    def get_command(self, ctx: Context, name: str) -> Command | None:
        if name not in _GROUPS:
            return super().get_command(ctx, name)
        module, attr = _GROUPS[name]
        group = typer.main.get_command(getattr(importlib.import_module(module), attr))
        group.name = name
        return group


app = typer.Typer(
    cls=_Commands,
    help="Housecall: telehealth on a FHIR R4 store.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return get_settings()


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Bring the configured database's schema up to date (Alembic, both engines)."""
    url = _settings().database_url
    migrations.upgrade(url)
    console.print(f"migrated {DatabaseURL.parse(url).dialect} database to head")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="processes (PostgreSQL only; SQLite runs one)")] = 1,
) -> None:
    """Serve the configured database; an empty database is migrated first."""
    import uvicorn

    settings = _settings()
    if migrations.is_empty(settings.database_url):
        console.print("empty database: migrating")
        migrations.upgrade(settings.database_url)
    elif migrations.pending(settings.database_url):
        # Upgrading a database that holds data is the operator's decision (after a backup).
        _fail(
            "the database schema is behind this version of Housecall: back it up, then run `housecall migrate`"
        )
    if workers > 1 and DatabaseURL.parse(settings.database_url).dialect == "sqlite":
        _fail("SQLite serves from one process; use PostgreSQL for --workers > 1")
    uvicorn.run(
        "housecall.app:create_served_app", factory=True, host=host, port=port, workers=workers,
        loop="uvloop", http="httptools", log_level="info",
        # No access log: its request lines carry query strings, and those carry health information
        # (audit/logsafe.py). No Server header: no version for anyone to look up.
        access_log=False, server_header=False,
    )  # fmt: skip


async def _load_demo(settings: Settings) -> tuple[dict[str, int], list[str]]:
    from housecall.demo.accounts import ensure_demo_accounts
    from housecall.demo.generate import demo_bundle, demo_summary

    bundle = demo_bundle()
    db = open_database(settings.database_url)
    await db.connect()
    try:
        org = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization")
        async with db.transaction() as conn:
            if not await conn.fetchval("SELECT 1 FROM organization WHERE id = $1", DEMO_ORG):
                await conn.execute(
                    "INSERT INTO organization (id, name, fhir_id, created) VALUES ($1, $2, $3, $4)",
                    DEMO_ORG, org["name"], org["id"], now_us(),
                )  # fmt: skip
        await loader.load_bundle(db, settings, DEMO_ORG, "transaction", bundle)
        async with db.transaction() as conn:
            people = await ensure_demo_accounts(conn, DEMO_ORG, bundle, settings)
    finally:
        await db.close()
    return demo_summary(bundle), people


DEMO_ORG = "demo"


async def _import_org(db: Database, org_id: str | None) -> str:
    """The organization an import loads into: the one named, the only one there is, or - on a
    database without any - a new organization ``default``."""
    async with db.transaction() as conn:
        known = [r[0] for r in await conn.fetch("SELECT id FROM organization ORDER BY id")]
        if org_id is not None:
            if org_id not in known:
                _fail(f"no organization '{org_id}' (create it with `housecall org create`)")
            return org_id
        if len(known) == 1:
            return str(known[0])
        if known:
            _fail(f"this database holds several organizations ({', '.join(known)}): choose one with --org")
        await conn.execute(
            "INSERT INTO organization (id, name, fhir_id, created) VALUES ($1, $2, NULL, $3)",
            "default", "Default organization", now_us(),
        )  # fmt: skip
        return "default"


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    load_only: Annotated[bool, typer.Option("--load-only", help="load the demo data and stop")] = False,
) -> None:
    """Migrate, load the demo organization (idempotent) and serve it."""
    settings = _settings()
    migrations.upgrade(settings.database_url)
    summary, people = asyncio.run(_load_demo(settings))
    table = Table(title="Demo organization loaded")
    table.add_column("resource")
    table.add_column("count", justify="right")
    for name, n in sorted(summary.items()):
        table.add_row(name, str(n))
    console.print(table)
    from housecall.demo.accounts import DEMO_PASSWORD

    console.print("Demo sign-ins (staff enrol an authenticator app at first sign-in), passphrase "
                  f"[bold]{DEMO_PASSWORD}[/bold]:")  # fmt: skip
    for person in people:
        console.print(f"  {person}")
    if not load_only:
        console.print(f"Housecall is at http://{host}:{port}/ (sign in at /signin; FHIR API at /fhir)")
        serve(host=host, port=port, workers=1)


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="run what is due now, then stop")] = False,
) -> None:
    """Work the background job queue (reminders, notifications); `serve` also does it in-process."""
    import housecall.app  # noqa: F401 - the application's modules register their job handlers
    from housecall.core import jobs

    settings = _settings()

    async def run() -> int:
        db = open_database(settings.database_url)
        await db.connect()
        try:
            if once:
                return await jobs.work_once(db, limit=1000)
            await jobs.work_forever(db)
            return 0
        finally:
            await db.close()

    ran = asyncio.run(run())
    if once:
        console.print(f"{ran} jobs run")


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Bundle (.json) and NDJSON files or folders")],
    org: Annotated[str | None, typer.Option(help="organization to load into (default: the only one)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="processes preparing files while this one stores (0: none; default: one per core)"),
    ] = None,
) -> None:
    """Load FHIR Bundles (transaction, batch, collection) and NDJSON; importing twice changes nothing."""
    settings = _settings()
    files = loader.expand(paths)
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        _fail(f"no such file: {', '.join(missing)}")
    # An import allocates millions of short-lived objects (parsed Bundles): with the default
    # thresholds, collections took a quarter of the time spent preparing them (decision 0026).
    tune_gc()
    # The workers are forked here, before the progress bar's thread and the event loop start: they
    # inherit the tuning.
    with loader.preparers(loader.default_workers() if workers is None else workers) as pool:
        try:
            total = loader.count_all(files, pool)
        except ValueError as exc:  # nothing is loaded when any file is not FHIR
            _fail(str(exc))
            return

        async def run() -> loader.ImportReport:
            db = open_database(settings.database_url)
            db.defer_statistics()
            await db.connect()
            try:
                if not await migrations.holds_schema(db):
                    migrations.upgrade(settings.database_url)  # a new database
                columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
                with Progress(*columns, console=err) as bar:
                    task = bar.add_task("import", total=total)
                    org_id = await _import_org(db, org)
                    return await loader.import_paths(
                        db, settings, org_id, files, lambda n: bar.advance(task, n), pool
                    )
            finally:
                await db.close()

        try:
            report = asyncio.run(run())
        except Exception as exc:  # a FhirError names the file, the entry and the element
            _fail(str(exc))
            return
    console.print(
        f"{report.files} files, {report.resources} entries: {report.created} created, "
        f"{report.updated} already present or updated, {len(report.errors)} failed"
    )
    if report.errors:
        raise typer.Exit(1)


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="folder for <Type>.ndjson files")] = Path("export"),
    types: Annotated[str, typer.Option("--type", help="comma-separated resource types (default all)")] = "",
) -> None:
    """Write the current version of every live resource as NDJSON, one file per type."""
    settings = _settings()
    wanted = [t for t in types.split(",") if t]

    async def run() -> dict[str, int]:
        db = open_database(settings.database_url)
        await db.connect()
        counts: dict[str, int] = {}
        out.mkdir(parents=True, exist_ok=True)
        try:
            async with db.reader() as conn:
                for (res_type,) in await conn.fetch(
                    "SELECT DISTINCT res_type FROM resource WHERE NOT deleted"
                ):
                    if wanted and res_type not in wanted:
                        continue
                    rows = await conn.fetch(
                        "SELECT content FROM resource WHERE res_type = $1 AND NOT deleted ORDER BY res_id",
                        res_type,
                    )
                    with (out / f"{res_type}.ndjson").open("wb") as fh:
                        for (content,) in rows:
                            fh.write(bytes(content) + b"\n")
                    counts[res_type] = len(rows)
        finally:
            await db.close()
        return counts

    counts = asyncio.run(run())
    for name, n in sorted(counts.items()):
        console.print(f"{name}: {n}")


@app.command()
def backup(path: Annotated[Path, typer.Argument(help="backup file to write")]) -> None:
    """Consistent online backup: SQLite's backup API, or pg_dump's snapshot on PostgreSQL."""
    url = DatabaseURL.parse(_settings().database_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    if url.dialect == "sqlite":
        _sqlite_copy(url.path, path)
    else:
        _pg_tool("pg_dump", "--format=custom", f"--file={path}", url.path)
    console.print(f"backup written to {path}")


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="backup file made by `housecall backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="replace the current database without asking")] = False,
) -> None:
    """Replace the configured database with a backup (stop the server first)."""
    if not path.exists():
        _fail(f"no such backup: {path}")
    if not yes and not typer.confirm("This replaces every resource in the configured database. Go on?"):
        raise typer.Exit(1)
    url = DatabaseURL.parse(_settings().database_url)
    if url.dialect == "sqlite":
        _sqlite_copy(path, url.path)
    else:
        _pg_tool("pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={url.path}", str(path))
    console.print(f"restored from {path}")


def _sqlite_copy(source: str | Path, target: str | Path) -> None:
    """SQLite's online backup API: a consistent copy even while the server writes."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _pg_tool(name: str, *args: str) -> None:
    exe = shutil.which(name)
    if exe is None:
        _fail(f"{name} is not installed (Debian: apt-get install postgresql-client)")
        return
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        _fail(f"{name} failed: {proc.stderr.strip()}")


@app.command()
def check() -> None:
    """Check configuration and database: reachable, migrated, no drift, durable settings."""
    settings = _settings()
    problems: list[str] = []
    try:
        url = DatabaseURL.parse(settings.database_url)
    except ValueError as exc:
        _fail(str(exc))
        return
    console.print(f"database: {url.dialect}")
    try:
        if migrations.is_empty(settings.database_url):
            problems.append("the database is not migrated (run `housecall migrate`)")
        else:
            migrations.check(settings.database_url)
    except Exception as exc:
        problems.append(f"schema: {exc}")
    problems += durability_problems(settings)
    if problems:
        for p in problems:
            err.print(f"[red]✗[/red] {p}")
        raise typer.Exit(1)
    console.print("[green]✓[/green] configuration and database are sound")


def durability_problems(settings: Settings) -> list[str]:
    """Settings that would lose acknowledged writes on a crash; refused unless the operator insists."""
    url = DatabaseURL.parse(settings.database_url)
    found: list[str] = []
    if url.dialect == "sqlite":
        conn = sqlite3.connect(url.path)
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
        if mode != "wal":
            found.append(f"SQLite journal_mode is {mode}, expected wal")
    else:
        import psycopg

        with psycopg.connect(url.path) as pg:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                value = pg.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                if value == "off":
                    found.append(f"PostgreSQL {name} is off: acknowledged writes could be lost in a crash")
    if found and settings.allow_unsafe_durability:
        err.print("[yellow]unsafe durability allowed by HOUSECALL_ALLOW_UNSAFE_DURABILITY[/yellow]")
        return []
    return found


def main() -> None:
    app()


if __name__ == "__main__":
    main()
