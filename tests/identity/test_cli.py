"""``housecall org`` and ``housecall user``, run as an operator runs them (a subprocess)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from housecall.identity import service
from tests.identity.conftest import Env, Mailbox


def hc(
    database_url: str, smtp_port: int, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOUSECALL_DATABASE_URL": database_url,
        "HOUSECALL_SMTP_PORT": str(smtp_port),
        "HOUSECALL_PUBLIC_URL": "https://housecall.example.org",
        "HOUSECALL_ARGON2_MEMORY_KIB": "1024",
        "HOUSECALL_ARGON2_TIME_COST": "1",
        "COLUMNS": "250",
    }
    env.pop("HOUSECALL_SETTINGS_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "housecall.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_org_and_user_commands(database_url: str, smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    org = "cli-" + secrets.token_hex(4)
    r = hc(database_url, port, "org", "create", "--id", org, "--name", "CLI Health")
    assert r.returncode == 0, r.stderr
    assert f"created organization {org}" in r.stdout
    r = hc(database_url, port, "org", "create", "--id", org, "--name", "Again")
    assert r.returncode == 1 and "exists already" in r.stderr
    r = hc(database_url, port, "org", "location", "--org", org, "--name", "Reno", "--state", "nv")
    assert r.returncode == 0 and "created Location/" in r.stdout, r.stderr

    admin = f"admin@{org}.example.org"
    r = hc(
        database_url,
        port,
        "user",
        "create",
        "--email",
        admin,
        "--role",
        "org_admin",
        "--org",
        org,
        "--password-stdin",
        stdin="a long admin passphrase\n",
    )
    assert r.returncode == 0, r.stderr
    assert "password set" in r.stdout
    r = hc(
        database_url,
        port,
        "user",
        "create",
        "--email",
        f"weak@{org}.example.org",
        "--role",
        "nurse",
        "--org",
        org,
        "--password-stdin",
        stdin="password1234\n",
    )
    assert r.returncode == 1 and "breaches" in r.stderr

    invited = f"nurse@{org}.example.org"
    r = hc(database_url, port, "user", "create", "--email", invited, "--role", "nurse", "--org", org)
    assert r.returncode == 0, r.stderr
    assert "e-mail with a link" in r.stdout
    link = box.link(invited)
    assert link.startswith("https://housecall.example.org/password/reset?token=")

    r = hc(
        database_url,
        port,
        "user",
        "create",
        "--email",
        f"p@{org}.example.org",
        "--role",
        "patient",
        "--org",
        org,
        "--patient",
        "no-such-patient",
    )
    assert r.returncode == 1 and "Patient" in r.stderr
    r = hc(
        database_url,
        port,
        "user",
        "create",
        "--email",
        f"x@{org}.example.org",
        "--role",
        "wizard",
        "--org",
        org,
    )
    assert r.returncode == 1 and "Unknown role" in r.stderr

    r = hc(database_url, port, "user", "list", "--org", org)
    assert r.returncode == 0, r.stderr
    assert admin in r.stdout and invited in r.stdout and "invited" in r.stdout and "org_admin" in r.stdout
    assert "a long admin passphrase" not in r.stdout + r.stderr


async def test_operator_commands_for_proxies_disabling_and_mfa(env: Env, smtp: tuple[Mailbox, int]) -> None:
    import asyncio

    url = env.settings.database_url
    run = lambda *args, stdin=None: asyncio.to_thread(hc, url, smtp[1], *args, stdin=stdin)  # noqa: E731
    child = await env.patient()
    parent = env.email("parent")
    r = await run(
        "user",
        "create",
        "--email",
        parent,
        "--role",
        "proxy",
        "--org",
        env.org_id,
        "--password-stdin",
        stdin="a long parent passphrase\n",
    )
    assert r.returncode == 0, r.stderr
    r = await run(
        "user",
        "grant-proxy",
        "--proxy",
        parent,
        "--patient",
        child,
        "--relationship",
        "parent",
        "--recorded-by",
        "form-17",
    )
    assert r.returncode == 0, r.stderr
    grant_id = r.stdout.split("granted ", 1)[1].split(":", 1)[0]
    async with env.db.reader() as conn:
        account = await service.find_account_by_email(conn, parent)
        assert account is not None
        grants = await service.proxy_grants(conn, account.id)
    assert [(g.id, g.patient_id, g.granted_by) for g in grants] == [(grant_id, child, "system:form-17")]
    r = await run("user", "revoke-proxy", "--grant", grant_id)
    assert r.returncode == 0, r.stderr
    async with env.db.reader() as conn:
        assert await service.proxy_grants(conn, account.id) == []

    c, nurse, _ = await env.staff_session("nurse")
    r = await run("user", "reset-mfa", "--email", nurse.email)
    assert r.returncode == 0, r.stderr
    assert (await c.get("/account")).status_code == 303
    r = await run("user", "disable", "--email", nurse.email)
    assert r.returncode == 0, r.stderr
    assert (await env.signin(env.client(), nurse.email)).status_code == 400
    r = await run("user", "disable", "--email", "nobody@nowhere.example.org")
    assert r.returncode == 1 and "No account" in r.stderr
