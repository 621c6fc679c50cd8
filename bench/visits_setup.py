"""What the visit benchmarks share: a fresh database with an organization, clinicians licensed in
Vermont, patients with signed-in sessions and booked video visits (checked in or not), written
straight into the store as the system (the benchmarks measure the visit, not the set-up pages),
and ``housecall serve`` on 127.0.0.1 in a child process that is always stopped.

Used by ``visit_admit_bench.py`` and ``signaling_bench.py``; not a script of its own.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from housecall.access.policy import Access  # noqa: E402
from housecall.core import migrate  # noqa: E402
from housecall.core.db import open_database  # noqa: E402
from housecall.core.settings import Settings  # noqa: E402
from housecall.fhir import interactions as ix  # noqa: E402
from housecall.identity import service as identity  # noqa: E402
from housecall.identity import sessions  # noqa: E402
from housecall.visits import service  # noqa: E402
from housecall.web.records import Records  # noqa: E402

PASSWORD = "bench visits passphrase"
# Sign-in is not what is measured: accounts get argon2's cheapest parameters.
CHEAP_ARGON2 = {"HOUSECALL_ARGON2_TIME_COST": "1", "HOUSECALL_ARGON2_MEMORY_KIB": "1024",
                "HOUSECALL_ARGON2_PARALLELISM": "1"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_database(engine: str, tmp: Path) -> str:
    """A fresh, migrated database: a SQLite file in ``tmp`` or a new PostgreSQL database."""
    if engine == "sqlite":
        url = f"sqlite:///{tmp / 'visits.db'}"
    else:
        name = "hc_visits_" + secrets.token_hex(4)
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"], check=True
        )
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    migrate.upgrade(url)
    return url


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                       check=False)  # fmt: skip


def license_vt() -> dict[str, Any]:
    """A Vermont licence the way demo/generate.py writes one."""
    return {
        "extension": [{"url": service.LICENSE_STATE_EXT,
                       "valueCodeableConcept": {"coding": [{"system": service.USPS, "code": "VT"}]}}],
        "identifier": [{"system": f"{service.LICENSE_SYSTEM}VT", "value": "VT-12345"}],
        "code": {"text": "State medical license"},
        "period": {"start": "2020-01-01", "end": "2099-12-31"},
    }  # fmt: skip


@dataclass
class Clinic:
    """What was set up: ids and raw session ids (cookie values)."""

    org: str
    settings: Settings
    clinicians: list[str] = field(default_factory=list)  # Practitioner ids
    clinician_sessions: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)  # Patient ids
    patient_sessions: list[str] = field(default_factory=list)
    # (appointment id, patient index, clinician index)
    visits: list[tuple[str, int, int]] = field(default_factory=list)


class Builder:
    """Writes the clinic through the FHIR interactions as the system, in one transaction."""

    def __init__(self, conn: Any, clinic: Clinic) -> None:
        self.conn = conn
        self.clinic = clinic
        self.ctx = ix.Ctx(conn, clinic.settings, "https://bench/fhir", Access.system(clinic.org))

    async def make(self, resource: dict[str, Any]) -> str:
        stored = (await ix.create(self.ctx, resource["resourceType"], resource)).stored
        assert stored is not None
        return str(stored.res_id)

    async def clinician(self, n: int) -> int:
        doctor = await self.make({"resourceType": "Practitioner", "name": [{"given": ["Maya"], "family": f"Carter{n}"}],
                                  "qualification": [license_vt()]})  # fmt: skip
        account = await identity.create_account(self.conn, self.clinic.org, f"clinician{n}@bench.example.org",
                                                "clinician", PASSWORD, settings=self.clinic.settings,
                                                practitioner_id=doctor)  # fmt: skip
        self.clinic.clinicians.append(doctor)
        self.clinic.clinician_sessions.append(await sessions.start_session(self.conn, account, sessions.FULL))
        return len(self.clinic.clinicians) - 1

    async def patient(self, n: int, clinician: int) -> int:
        patient = await self.make(
            {"resourceType": "Patient", "name": [{"given": ["Ana"], "family": f"Reyes{n}"}]}
        )
        await self.make({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
                         "participant": [{"member": {"reference": f"Practitioner/{self.clinic.clinicians[clinician]}"}}]})  # fmt: skip
        account = await identity.create_account(self.conn, self.clinic.org, f"patient{n}@bench.example.org", "patient",
                                                PASSWORD, settings=self.clinic.settings, patient_id=patient)  # fmt: skip
        self.clinic.patients.append(patient)
        self.clinic.patient_sessions.append(await sessions.start_session(self.conn, account, sessions.FULL))
        return len(self.clinic.patients) - 1

    async def visit(self, patient: int, clinician: int, *, start_in_minutes: float = 0, minutes: int = 20,
                    check_in: bool = False) -> str:  # fmt: skip
        """A booked video visit starting ``start_in_minutes`` from now; checked in from Vermont
        (the Encounter the check-in page writes) when ``check_in``."""
        start = service.now_dt() + dt.timedelta(minutes=start_in_minutes)
        appointment = await self.make({
            "resourceType": "Appointment", "status": "booked",
            "appointmentType": {"coding": [{"system": service.ACT_CODE, "code": "VR"}]},
            "start": service.iso(start), "end": service.iso(start + dt.timedelta(minutes=minutes)),
            "minutesDuration": minutes,
            "participant": [{"actor": {"reference": f"Patient/{self.clinic.patients[patient]}"}, "status": "accepted"},
                            {"actor": {"reference": f"Practitioner/{self.clinic.clinicians[clinician]}"},
                             "status": "accepted"}],
        })  # fmt: skip
        if check_in:
            rec = Records(self.ctx)
            visit = service.Visit(await rec.read("Appointment", appointment) or {})
            assert not await service.check_in(rec, visit, state="VT", phone="802-555-0100")
        self.clinic.visits.append((appointment, patient, clinician))
        return appointment


async def open_clinic(url: str) -> tuple[Any, Clinic]:
    """The database (connected) and an empty organization in it."""
    settings = Settings(database_url=url, smtp_port=1, argon2_time_cost=1, argon2_memory_kib=1024,
                        argon2_parallelism=1)  # fmt: skip
    db = open_database(url)
    await db.connect()
    org = "bench-" + secrets.token_hex(3)
    async with db.transaction() as conn:
        await identity.create_organization(conn, org, "Bench Health", settings=settings)
    return db, Clinic(org, settings)


@contextmanager
def serving(
    url: str, log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``housecall serve`` on 127.0.0.1 (one process, its output in ``log``); yields (host:port,
    process); always stopped."""
    port = free_port()
    env = {**os.environ, "HOUSECALL_DATABASE_URL": url, "HOUSECALL_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "HOUSECALL_SMTP_PORT": "1", **CHEAP_ARGON2, **(extra_env or {})}  # fmt: skip
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "housecall.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 60 s")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()


def load() -> str:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def pct(values: list[float], p: float) -> float:
    """The p-th quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]
