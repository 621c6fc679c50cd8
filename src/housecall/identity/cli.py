"""``housecall org`` and ``housecall user``: operators create organizations and accounts.

    housecall org create --id acme --name "Acme Health"
    housecall org location --org acme --name "Acme Fresno" --state CA
    housecall user create --email a@acme.org --role org_admin [--org acme] [--password-stdin]
    housecall user create --email p@ex.org --role patient --patient <Patient id>
    housecall user list [--org acme]
    housecall user disable --email a@acme.org / user reset-mfa --email a@acme.org
    housecall user grant-proxy --proxy mum@ex.org --patient <Patient id> --relationship parent
    housecall user revoke-proxy --grant <grant id>

Without ``--password-stdin`` the account is created unverified and its owner gets an e-mail with
a single-use link to choose a password (sent after the commit, through HOUSECALL_SMTP_*).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from housecall.core.db import Conn, open_database
from housecall.core.mail import Outbox
from housecall.core.settings import Settings, get_settings
from housecall.identity import service
from housecall.identity.service import IdentityError

org_app = typer.Typer(
    help="Organizations (tenants) and their locations.", no_args_is_help=True, add_completion=False
)
user_app = typer.Typer(
    help="Accounts: patients, proxies, clinicians and staff.", no_args_is_help=True, add_completion=False
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _run(work: Callable[[Conn, Settings, Outbox], Awaitable[Any]]) -> Any:
    """Run ``work`` in one unit of work; queued mail goes out after the commit."""
    settings = get_settings()

    async def main() -> Any:
        db = open_database(settings.database_url)
        await db.connect()
        outbox = Outbox()
        try:
            async with db.transaction() as conn:
                result = await work(conn, settings, outbox)
        finally:
            await db.close()
        if outbox.queued and await outbox.send(settings) < len(outbox.queued or [None]):
            err.print(
                "[yellow]warning:[/yellow] the e-mail could not be sent; check HOUSECALL_SMTP_HOST/PORT"
            )
        return result

    try:
        return asyncio.run(main())
    except IdentityError as exc:
        _fail(exc.message)


@org_app.command("create")
def org_create(
    org_id: Annotated[str, typer.Option("--id", help="short id: lower-case letters, digits, '-'")],
    name: Annotated[str, typer.Option(help="the organization's name")],
) -> None:
    """Create an organization (and its FHIR Organization)."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> service.Organization:
        return await service.create_organization(conn, org_id, name, settings=settings)

    org = _run(work)
    console.print(f"created organization {org.id} (Organization/{org.fhir_id})")


@org_app.command("location")
def org_location(
    org: Annotated[str, typer.Option(help="organization id")],
    name: Annotated[str, typer.Option(help="the location's name")],
    state: Annotated[str, typer.Option(help="US state, two letters (e.g. CA)")],
    city: Annotated[str | None, typer.Option(help="city")] = None,
) -> None:
    """Add a location (a FHIR Location managed by the organization)."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> str:
        return await service.add_location(conn, org, name, state.upper(), city=city, settings=settings)

    console.print(f"created Location/{_run(work)}")


@org_app.command("list")
def org_list() -> None:
    """List organizations."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> list[service.Organization]:
        return await service.list_organizations(conn)

    table = Table(title="Organizations")
    for column in ("id", "name", "FHIR Organization"):
        table.add_column(column)
    for org in _run(work):
        table.add_row(org.id, org.name, org.fhir_id or "")
    console.print(table)


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="the person's e-mail address (their sign-in name)")],
    role: Annotated[
        str,
        typer.Option(
            help="patient, proxy, clinician, front_desk, nurse, rpm_nurse, interpreter, org_admin or privacy_officer"
        ),
    ],
    org: Annotated[str | None, typer.Option(help="organization id (optional when there is only one)")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient id, for a patient account")] = None,
    practitioner: Annotated[str | None, typer.Option(help="Practitioner id, for a clinician")] = None,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Create an account. Without --password-stdin, an e-mail invites the person to choose one."""
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            _fail("no password on standard input")

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> service.Account:
        org_id = org
        if org_id is None:
            orgs = await service.list_organizations(conn)
            if len(orgs) != 1:
                raise IdentityError("name the organization with --org (there is not exactly one)")
            org_id = orgs[0].id
        return await service.create_account(
            conn,
            org_id,
            email,
            role,
            password,
            patient_id=patient,
            practitioner_id=practitioner,
            display_name=name,
            outbox=outbox,
            settings=settings,
        )

    account = _run(work)
    how = "password set" if password else "an e-mail with a link to choose a password was sent"
    console.print(
        f"created account {account.id} ({account.email}, {account.role_label}, {account.org_id}): {how}"
    )


@user_app.command("list")
def user_list(org: Annotated[str | None, typer.Option(help="only this organization")] = None) -> None:
    """List accounts."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> list[service.Account]:
        return await service.list_accounts(conn, org)

    table = Table(title="Accounts")
    for column in ("id", "organization", "e-mail", "role", "linked to", "status", "MFA"):
        table.add_column(column)
    for a in _run(work):
        status = "disabled" if a.disabled else "active" if a.has_password else "invited"
        if a.has_password and not a.email_verified:
            status += " (unverified)"
        table.add_row(
            a.id,
            a.org_id,
            a.email,
            a.role_label,
            a.fhir_user or "",
            status,
            "on" if a.mfa_enrolled else "off",
        )
    console.print(table)


@user_app.command("disable")
def user_disable(email: Annotated[str, typer.Option(help="the account's e-mail address")]) -> None:
    """Disable an account; its sessions end at once."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> service.Account:
        account = await service.find_account_by_email(conn, email)
        if account is None or not await service.disable_account(conn, account.org_id, account.id):
            raise IdentityError(f"No account with the e-mail address {email}.")
        return account

    console.print(f"disabled {_run(work).email}")


@user_app.command("reset-mfa")
def user_reset_mfa(email: Annotated[str, typer.Option(help="the account's e-mail address")]) -> None:
    """Remove a lost authenticator: the account's sessions end; staff must enrol again at sign-in."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> service.Account:
        account = await service.find_account_by_email(conn, email)
        if account is None or not await service.reset_mfa(conn, account.org_id, account.id):
            raise IdentityError(f"No account with the e-mail address {email}.")
        return account

    console.print(f"two-step sign-in removed for {_run(work).email}")


@user_app.command("grant-proxy")
def user_grant_proxy(
    proxy: Annotated[str, typer.Option(help="the proxy account's e-mail address")],
    patient: Annotated[str, typer.Option(help="the Patient id they may act for")],
    relationship: Annotated[
        str, typer.Option(help="parent, guardian, caregiver, spouse or child")
    ] = "caregiver",
    recorded_by: Annotated[
        str, typer.Option(help="who recorded the patient's permission (e.g. the signed form's reference)")
    ] = "operator",
) -> None:
    """Record a patient's permission for a proxy (a signed form, usually); prints the grant id."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> service.ProxyGrant:
        account = await service.find_account_by_email(conn, proxy)
        if account is None:
            raise IdentityError(f"No account with the e-mail address {proxy}.")
        return await service.grant_proxy(
            conn,
            account.id,
            patient,
            granted_by=f"system:{recorded_by}",
            relationship=relationship,
            settings=settings,
        )

    grant = _run(work)
    console.print(
        f"granted {grant.id}: {proxy} may act for Patient/{grant.patient_id} (RelatedPerson/{grant.related_person_id})"
    )


@user_app.command("revoke-proxy")
def user_revoke_proxy(grant: Annotated[str, typer.Option(help="the grant id")]) -> None:
    """End a proxy grant now."""

    async def work(conn: Conn, settings: Settings, outbox: Outbox) -> bool:
        return await service.revoke_proxy(conn, grant)

    if not _run(work):
        _fail(f"no active grant {grant}")
    console.print(f"revoked {grant}")
