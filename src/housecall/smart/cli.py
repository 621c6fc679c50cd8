"""``housecall client``: register, list and disable OAuth/SMART clients."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from housecall.core.db import open_database
from housecall.core.settings import get_settings
from housecall.smart import clients

client_app = typer.Typer(
    help="OAuth / SMART clients: apps, devices and integrations.", no_args_is_help=True, add_completion=False
)
console = Console()
err = Console(stderr=True)


async def _with_db(work: Any) -> Any:
    db = open_database(get_settings().database_url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            return await work(conn)
    finally:
        await db.close()


@client_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="the app's name, shown to patients on the consent page")],
    grant: Annotated[
        str, typer.Option(help="authorization_code (apps) or client_credentials (backends, devices)")
    ],
    scope: Annotated[list[str], typer.Option(help="scopes it may be granted (repeat, or space-separated)")],
    redirect_uri: Annotated[list[str] | None, typer.Option(help="exact redirect URI (repeatable)")] = None,
    jwks: Annotated[Path | None, typer.Option(help="JWKS file of its public keys (private_key_jwt)")] = None,
    secret: Annotated[
        bool, typer.Option("--secret", help="issue a client secret (client_secret_basic)")
    ] = False,
    org: Annotated[
        str | None, typer.Option(help="the organization it acts in (required for backends)")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="the Device resource id a device client speaks for")
    ] = None,
) -> None:
    """Register a client; prints its id (and its secret, once, with --secret)."""
    key_set = None
    if jwks is not None:
        try:
            key_set = json.loads(jwks.read_text())
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] cannot read the JWKS: {exc}")
            raise typer.Exit(1) from exc
    scopes = [s for item in scope for s in item.split()]

    async def work(conn: Any) -> tuple[clients.Client, str | None]:
        return await clients.create_client(
            conn, name=name, grant=grant, scopes=scopes, redirect_uris=list(redirect_uri or []), jwks=key_set,
            secret=secret, org_id=org, device_id=device, now_us=int(time.time() * 1_000_000),
        )  # fmt: skip

    try:
        client, plain = asyncio.run(_with_db(work))
    except clients.ClientError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    typer.echo(f"client_id: {client.client_id}")
    if plain is not None:
        typer.echo(f"client_secret: {plain}")
        err.print("The secret is shown once and stored only as a hash: keep it now.")


@client_app.command("list")
def list_() -> None:
    """Every registered client (secrets are never shown)."""
    found: list[clients.Client] = asyncio.run(_with_db(clients.list_clients))
    table = Table(title="OAuth clients")
    for column in ("client id", "name", "grant", "auth", "org", "scopes", "redirect URIs", "state"):
        table.add_column(column, overflow="fold")
    for c in found:
        table.add_row(
            c.client_id, c.name, " ".join(c.grant_types), c.auth_method, c.org_id or "any", " ".join(c.scopes),
            " ".join(c.redirect_uris), "disabled" if c.disabled else "enabled",
        )  # fmt: skip
    console.print(table)


@client_app.command("disable")
def disable(client_id: Annotated[str, typer.Argument(help="the client id")]) -> None:
    """Disable a client: it gets no new tokens, and every token it holds stops working."""
    ok = asyncio.run(_with_db(lambda conn: clients.disable_client(conn, client_id)))
    if not ok:
        err.print(f"[red]error:[/red] no client {client_id}")
        raise typer.Exit(1)
    typer.echo(f"disabled {client_id}")
