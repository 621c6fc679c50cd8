"""The visit page through the SFU (decision 0022): a real Chromium page publishes to and receives
from a real Janus VideoRoom, with an aiortc clinician speaking the same ``sfu-*`` messages.

libnice (Janus's ICE) skips loopback interfaces, so Janus, ``housecall serve``, Chromium and the
aiortc peer all run inside a network namespace of their own with a veth interface
(``tests/e2e/sfu_page_netns.py`` under ``unshare --net``, as root: CI runs the suite as root). The
clinic is set up here, outside, on either engine; inside, PostgreSQL is reached over its Unix socket
(a TCP port on 127.0.0.1 belongs to the other namespace).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from housecall.access.policy import Access
from housecall.core.db import open_database
from housecall.fhir import interactions as ix
from housecall.identity import service as identity
from housecall.identity import sessions
from tests.e2e.visit_clinic import visit_clinic
from tests.identity.conftest import PASSWORD, Mailbox, settings_for_tests, smtp  # noqa: F401 - smtp is a fixture
from tests.visits.conftest import license_

ROOT = Path(__file__).resolve().parents[2]
PG_SOCKET = Path("/var/run/postgresql")


def inside_namespace(url: str) -> str:
    """The database URL as seen from a new network namespace: PostgreSQL over its Unix socket."""
    if not url.startswith("postgresql"):
        return url
    parts = urlsplit(url)
    return f"postgresql://{parts.username or 'postgres'}@{parts.path}?host={PG_SOCKET}"


async def _second_clinician(database_url: str, smtp_port: int, setup: dict[str, str]) -> str:
    """A second clinician on the visit and the patient's care team (licensed in Vermont too), signed
    in: their session."""
    settings = settings_for_tests(database_url, smtp_port)
    db = open_database(database_url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            ctx = ix.Ctx(conn, settings, "https://testserver/fhir", Access.system(setup["org"]))
            made = (await ix.create(ctx, "Practitioner", {
                "resourceType": "Practitioner", "name": [{"given": ["Sam"], "family": "Lee"}],
                "qualification": [license_("VT")]})).stored  # fmt: skip
            assert made is not None
            doctor = str(made.res_id)
            appointment = (await ix.read(ctx, "Appointment", setup["appointment"])).stored
            assert appointment is not None
            body = appointment.resource()
            patient = next(
                p["actor"]["reference"] for p in body["participant"] if "Patient/" in p["actor"]["reference"]
            )
            await ix.create(ctx, "CareTeam", {  # on the patient's care team, like the first
                "resourceType": "CareTeam", "status": "active", "subject": {"reference": patient},
                "participant": [{"member": {"reference": f"Practitioner/{doctor}"}}]})  # fmt: skip
            body["participant"].append(
                {"actor": {"reference": f"Practitioner/{doctor}"}, "status": "accepted"}
            )
            await ix.update(ctx, "Appointment", setup["appointment"], body)
            account = await identity.create_account(conn, setup["org"], f"sam@{setup['org']}.example.org", "clinician",
                                                    PASSWORD, settings=settings, practitioner_id=doctor)  # fmt: skip
            return await sessions.start_session(conn, account, sessions.FULL)
    finally:
        await db.close()


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="media through Janus needs a network namespace with a non-loopback interface (libnice skips "
    "loopback): `unshare --net` and `ip link add` need root; CI runs the suite as root",
)
async def test_the_page_publishes_and_receives_through_janus(
    database_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
    tmp_path: Path,
) -> None:
    """At the threshold (two here) the page stays peer to peer; when a third person joins it
    closes the mesh, publishes once and subscribes to each other person: it decodes the clinician's
    and a second clinician's video and audio through Janus (the clinician's blue read from its tile's
    pixels), and the clinician decodes the page's; audio only stops the page's video upstream; after
    the signaling drops the page publishes and subscribes again; when someone leaves, the page
    closes that subscription and its tile."""
    if database_url.startswith("postgresql") and not (PG_SOCKET / ".s.PGSQL.5432").exists():
        pytest.fail(
            f"PostgreSQL's Unix socket is not at {PG_SOCKET}: the namespace cannot reach the database"
        )
    setup = await visit_clinic(database_url, smtp[1])
    setup["colleague"] = await _second_clinician(database_url, smtp[1], setup)
    setup["database_url"] = inside_namespace(database_url)
    setup["smtp_port"] = str(smtp[1])
    (tmp_path / "setup.json").write_text(json.dumps(setup))
    run = await asyncio.to_thread(
        subprocess.run,
        ["unshare", "--net", sys.executable, "-m", "tests.e2e.sfu_page_netns", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    log = tmp_path / "janus.log"
    assert run.returncode == 0, run.stderr[-4000:] + (log.read_text()[-2000:] if log.exists() else "")
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    # Two people (the threshold here): peer to peer as before. The third moves everyone to Janus.
    assert seen["sfu_at_two"]["on"] is False and seen["sfu_at_two"]["upstream"] is None, seen["sfu_at_two"]
    assert seen["doctor_sfu_on"] is True and seen["colleague_sfu_on"] is True
    # The page decodes both clinicians' video and audio, one subscription each ...
    assert seen["page_decodes"], seen["page_rows"]
    # ... and it is the clinician's picture: blue, not Chromium's own green test pattern.
    r, g, b = seen["tile_colour"]
    assert b > 150 and b > r + 60 and b > g + 60, seen["tile_colour"]
    # The page's one upstream reaches the clinician (Chromium's fake camera is mostly green).
    assert seen["doctor_saw"]["frames"] >= 5 and seen["doctor_saw"]["audio"] >= 5, seen["doctor_saw"]
    assert seen["doctor_saw"]["u"] < 110 and seen["doctor_saw"]["v"] < 110, seen["doctor_saw"]
    assert seen["page_sent"]["framesSent"] > 0 and seen["page_sent"]["audioPackets"] > 0
    # No mesh left: one upstream and one subscription per person, labelled with their names.
    sfu = seen["page_sfu"]
    assert sfu["on"] and sfu["mesh"] == 0 and sfu["upstream"] == "connected", sfu
    assert sorted(s["label"] for s in sfu["subscriptions"]) == ["Maya Carter", "Sam Lee"], sfu
    assert all(s["started"] for s in sfu["subscriptions"]) and seen["page_connections"] == 3

    assert seen["audio_only"]["frames_more"] == 0 and seen["audio_only"]["audio_more"] > 0, seen["audio_only"]

    assert seen["new_id_after_drop"] and seen["page_decodes_after_drop"]
    assert seen["doctor_saw_after_drop"]["frames"] >= 5, seen["doctor_saw_after_drop"]
    assert len(seen["page_sfu_after_drop"]["subscriptions"]) == 2, seen["page_sfu_after_drop"]
    # Decision 0024's step-down reads the SFU connections' stats too, and a healthy call stays on video.
    assert seen["stats_samples"] >= 3 and not seen["auto_stepped"], seen

    left = seen["after_colleague_left"]["subscriptions"]
    assert [s["label"] for s in left] == ["Maya Carter"] and seen["tiles_after_colleague_left"] == 1, left
    assert seen["after_doctor_left"]["subscriptions"] == [] and seen["tiles_after_left"] == 0
