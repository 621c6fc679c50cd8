"""Visits through an SFU: the room life cycle (``visits/sfu.SfuRooms``) on a real Janus VideoRoom
(``visits/janus.JanusSfu``).

- Managing rooms needs no media: a Janus on 127.0.0.1 beside the tests (any user).
- Media needs ICE, and libnice skips loopback: ``test_two_peers_meet_through_janus`` runs Janus and
  two aiortc peers inside a network namespace of their own (``unshare --net``, as root: CI runs the
  suite as root) through ``tests/visits/sfu_netns.py``. It is skipped, saying why, for anyone else.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from housecall.access.actor import system_actor
from housecall.core.settings import Settings
from housecall.visits import sfu as sfu_module
from housecall.visits import sfu_relay
from housecall.visits.janus import JanusSfu
from housecall.visits.sfu import JoinGrant, NotAdmitted, SfuNoSuchRoom, SfuRefused, SfuRooms, SfuUnavailable
from housecall.visits.signal import Member, Room
from tests.support import free_port
from tests.visits import janus_server
from tests.visits.conftest import Booked, connect, cookie_of, make_guest_link, open_guest_link

ROOT = Path(__file__).resolve().parents[2]
ORG, VISIT = "org-1", "appointment-7"
SESSION_TIMEOUT = 3  # seconds: short, so a test sees Janus drop a session nobody keeps alive


@dataclass
class Person:
    id: str
    admitted: bool


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[janus_server.Janus]:
    assert janus_server.JANUS.exists(), "Janus is missing: run scripts/services.sh (Debian's janus package)"
    rtp_low = 20000 + secrets.randbelow(100) * 100  # media ports of its own on a shared host
    with janus_server.running(
        tmp_path_factory.mktemp("janus"), port=free_port(), rtp_low=rtp_low, session_timeout=SESSION_TIMEOUT
    ) as server:
        yield server


@pytest.fixture
async def sfu(janus: janus_server.Janus) -> AsyncIterator[JanusSfu]:
    adapter = JanusSfu(janus.url, api_secret=janus.api_secret, admin_key=janus.admin_key, keepalive=1)
    yield adapter
    await adapter.close()


async def test_room_life_cycle_grants_only_the_admitted(sfu: JanusSfu) -> None:
    rooms = SfuRooms(sfu, threshold=3)
    assert not rooms.wanted(3) and rooms.wanted(4)
    patient, clinician, waiting = Person("p1", True), Person("c1", True), Person("w1", False)

    with pytest.raises(NotAdmitted):
        await rooms.grant_for(ORG, VISIT, waiting)
    with pytest.raises(NotAdmitted):
        await rooms.subscribe(ORG, VISIT, waiting, 1)

    # Created once, however many ask at the same moment.
    first, second = await asyncio.gather(rooms.room_for(ORG, VISIT), rooms.room_for(ORG, VISIT))
    assert first is second
    room = first

    # A grant is reused while valid; with it the patient is let into the room (subscribing to a
    # feed that does not exist gets as far as the room, then fails on the feed).
    grant = await rooms.grant_for(ORG, VISIT, patient)
    assert await rooms.grant_for(ORG, VISIT, patient) is grant
    with pytest.raises(sfu_module.SfuError) as no_feed:
        await rooms.subscribe(ORG, VISIT, patient, 424242)
    assert no_feed.value.code == "sfu-no-feed"
    assert [p.display for p in await rooms.participants(ORG, VISIT)] == ["p1"]

    # Without a grant of our server's making Janus refuses: a made-up token, a revoked token, a
    # wrong pin; an expired grant is refused before Janus is asked.
    forged = JoinGrant(room=room.id, participant="x1", token="made-up", expires=grant.expires)
    with pytest.raises(SfuRefused):
        await sfu.subscribe(room, forged, 424242)
    clinician_grant = await rooms.grant_for(ORG, VISIT, clinician)
    await rooms.remove(ORG, VISIT, clinician.id)
    with pytest.raises(SfuRefused):
        await sfu.subscribe(room, clinician_grant, 424242)
    late = JoinGrant(room=room.id, participant="c2", token=grant.token, expires=0)
    with pytest.raises(SfuRefused, match="expired"):
        await sfu.subscribe(room, late, 424242)
    wrong_pin = sfu_module.SfuRoom(room.visit, room.id, room.secret, "0000", room.publishers)
    other = await sfu.grant(room, "c3", seconds=60)
    with pytest.raises(SfuRefused):
        await sfu.subscribe(wrong_pin, other, 424242)

    # Removing the patient ends their presence; the visit's end destroys the room, once.
    await rooms.remove(ORG, VISIT, patient.id)
    assert await rooms.participants(ORG, VISIT) == []
    await rooms.end(ORG, VISIT)
    assert await rooms.participants(ORG, VISIT) == []
    with pytest.raises(SfuNoSuchRoom):
        await sfu.participants(room)
    with pytest.raises(SfuNoSuchRoom):
        await sfu.subscribe(room, other, 424242)
    await rooms.end(ORG, VISIT)
    await sfu.destroy_room(room)  # a gone room is not an error

    # A room the SFU lost (Janus restarted) is created again at the next grant.
    lost = await rooms.room_for(ORG, "appointment-8")
    await sfu.destroy_room(lost)
    await rooms.grant_for(ORG, "appointment-8", patient)
    again = rooms.rooms[(ORG, "appointment-8")]
    assert again.id != lost.id and await rooms.participants(ORG, "appointment-8") == []
    await rooms.end(ORG, "appointment-8")


async def test_keepalives_hold_the_session(janus: janus_server.Janus) -> None:
    """Janus drops a session after ``session_timeout`` without a request (a long poll does not
    count): keepalives hold it; without them the adapter notices and opens a new one."""
    kept = JanusSfu(janus.url, api_secret=janus.api_secret, admin_key=janus.admin_key, keepalive=1)
    lapsed = JanusSfu(janus.url, api_secret=janus.api_secret, admin_key=janus.admin_key, keepalive=600)
    try:
        room_kept = await kept.create_room("v1", publishers=3)
        room_lapsed = await lapsed.create_room("v2", publishers=3)
        assert kept._control and lapsed._control
        kept_session, lapsed_session = kept._control[0].id, lapsed._control[0].id
        await asyncio.sleep(SESSION_TIMEOUT * 2 + 1)
        assert await kept.participants(room_kept) == []
        assert kept._control[0].id == kept_session
        assert await lapsed.participants(room_lapsed) == []  # answered through a new session
        assert lapsed._control[0].id != lapsed_session
        await kept.destroy_room(room_kept)
        await lapsed.destroy_room(room_lapsed)
    finally:
        await kept.close()
        await lapsed.close()


async def test_janus_errors_become_clear_exceptions(janus: janus_server.Janus) -> None:
    wrong_secret = JanusSfu(janus.url, api_secret="not-the-secret", admin_key=janus.admin_key)
    wrong_key = JanusSfu(janus.url, api_secret=janus.api_secret, admin_key="not-the-key")
    nobody = JanusSfu(f"http://127.0.0.1:{free_port()}/janus", timeout=2)
    try:
        with pytest.raises(SfuRefused, match="secret"):
            await wrong_secret.create_room("v", publishers=3)
        with pytest.raises(SfuRefused, match="admin_key"):
            await wrong_key.create_room("v", publishers=3)
        with pytest.raises(SfuUnavailable) as down:
            await nobody.create_room("v", publishers=3)
        assert down.value.code == "sfu-unavailable"
    finally:
        for adapter in (wrong_secret, wrong_key, nobody):
            await adapter.close()


def test_settings_choose_the_sfu() -> None:
    assert sfu_module.rooms_from_settings(Settings(sfu="none")) is None
    rooms = sfu_module.rooms_from_settings(
        Settings(sfu="janus", janus_url="http://127.0.0.1:1/janus", sfu_threshold=4, janus_api_secret="s")
    )
    assert rooms is not None and isinstance(rooms.sfu, JanusSfu)
    assert rooms.sfu.url == "http://127.0.0.1:1/janus" and rooms.sfu.api_secret == "s"
    assert rooms.wanted(5) and not rooms.wanted(4)


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="media through Janus needs a network namespace with a non-loopback interface (libnice skips "
    "loopback): `unshare --net` and `ip link add` need root; CI runs the suite as root",
)
def test_two_peers_meet_through_janus(tmp_path: Path) -> None:
    """Two admitted aiortc peers publish through the visit's VideoRoom and each decodes the
    other's picture (a colour only the other sends) and audio; a waiting participant, a made-up,
    revoked or expired grant and a wrong pin are refused; removal and the visit's end stop media."""
    run = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.visits.sfu_netns", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    log = tmp_path / "janus.log"
    assert run.returncode == 0, run.stderr[-3000:] + (log.read_text()[-2000:] if log.exists() else "")
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    assert seen["sfu_on"]
    assert seen["grant_for_waiting"] == "not-admitted"
    assert seen["publish_waiting"] == "not-admitted"
    assert seen["told_of_feeds"] == ["alice", "bob"]
    assert seen["start_others_offer"] == "no-such-offer"
    assert seen["published"] and seen["janus_webrtcup"]
    assert seen["participants"] == ["alice", "bob"]
    assert seen["media"], seen
    # Alice sends red (Y 81, U 90, V 240) and Bob blue (41, 240, 110): each sees the other's.
    assert seen["alice_saw"]["frames"] >= 5 and seen["alice_saw"]["audio"] >= 5
    assert seen["bob_saw"]["frames"] >= 5 and seen["bob_saw"]["audio"] >= 5
    assert abs(seen["alice_saw"]["u"] - 240) < 12 and abs(seen["alice_saw"]["v"] - 110) < 12, seen[
        "alice_saw"
    ]
    assert abs(seen["bob_saw"]["u"] - 90) < 12 and abs(seen["bob_saw"]["v"] - 240) < 12, seen["bob_saw"]

    assert seen["forged_publish"] == "sfu-refused"
    assert seen["forged_subscribe"] == "sfu-refused"
    assert seen["revoked_subscribe"] == "sfu-refused"
    assert seen["expired_subscribe"] == "sfu-refused"
    assert seen["wrong_pin_subscribe"] == "sfu-refused"
    assert seen["right_pin_subscribe"] == "accepted"

    # Past Janus's session timeout the keepalives hold the call: frames still arrive.
    assert seen["after_timeout"]["frames_more"] > 10 and seen["after_timeout"]["participants"] == 2
    assert seen["after_remove"] == ["alice"]
    assert seen["after_end"] == "sfu-no-room" and seen["join_after_end"] == "sfu-no-room"
    assert seen["alice_connection_after_end"] == "closed"
    assert seen["frames_after_end"] == 0


# -- the visit's signaling speaking to the SFU ------------------------------------------------------


def member(role: str, *, admitted: bool) -> Member:
    # A signaling member without a socket: the relay only queues messages for it (``out``).
    return Member(None, role, role, None, system_actor(ORG), admitted=admitted)  # type: ignore[arg-type]


def inbox(m: Member) -> list[dict[str, Any]]:
    out = []
    while not m.out.empty():
        data = m.out.get_nowait()
        assert data is not None
        out.append(orjson.loads(data))
    return out


async def test_visit_switches_to_the_sfu_past_three_people(sfu: JanusSfu) -> None:
    rooms = SfuRooms(sfu, threshold=3)
    room = Room(ORG, VISIT, ["practitioner-1"])
    clinician, patient, interpreter = (
        member(r, admitted=True) for r in ("clinician", "patient", "interpreter")
    )
    waiting = member("guest", admitted=False)
    for m in (clinician, patient, interpreter, waiting):
        room.members[m.id] = m
    for m in (clinician, patient, interpreter):
        await sfu_relay.admitted(rooms, room, m)
    assert not rooms.active(ORG, VISIT) and all(inbox(m) == [] for m in room.members.values())
    await sfu_relay.handle(rooms, room, patient, {"type": "sfu-publish", "sdp": "v=0"})
    assert inbox(patient) == [{"type": "error", "code": "no-sfu", "refused": "sfu-publish"}]

    # The fourth person in the call moves everyone admitted to the SFU; the waiting guest hears nothing.
    family = member("family", admitted=True)
    room.members[family.id] = family
    await sfu_relay.admitted(rooms, room, family)
    assert rooms.active(ORG, VISIT)
    for m in (clinician, patient, interpreter, family):
        assert inbox(m) == [{"type": "sfu", "on": True}]
    assert inbox(waiting) == []
    await sfu_relay.handle(rooms, room, waiting, {"type": "sfu-publish", "sdp": "v=0"})
    assert inbox(waiting) == [{"type": "error", "code": "not-admitted", "refused": "sfu-publish"}]

    # The patient publishes (a real aiortc offer); the others are told to subscribe.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await sfu_relay.handle(rooms, room, patient, {"type": "sfu-publish", "sdp": pc.localDescription.sdp})
    finally:
        await pc.close()
    [answer] = inbox(patient)
    assert answer["type"] == "sfu-answer" and "m=video" in answer["sdp"], answer
    assert inbox(clinician) == [{"type": "sfu-feed", "peer": patient.id}]

    # Nothing to receive until a feed carries media (here the patient's connection never comes up:
    # no namespace); receiving and answering the SFU's offers is in test_two_peers_meet_through_janus.
    await sfu_relay.handle(rooms, room, clinician, {"type": "sfu-subscribe", "peer": patient.id})
    assert inbox(clinician) == [{"type": "error", "code": "no-such-peer", "refused": "sfu-subscribe"}]
    await sfu_relay.handle(rooms, room, clinician, {"type": "sfu-start", "key": "made-up", "sdp": "v=0"})
    assert inbox(clinician) == [{"type": "error", "code": "no-such-offer", "refused": "sfu-start"}]
    await sfu_relay.handle(rooms, room, clinician, {"type": "sfu-start", "key": "made-up"})
    assert inbox(clinician) == [{"type": "error", "code": "bad-sdp", "refused": "sfu-start"}]
    assert patient.id in {p.display for p in await rooms.participants(ORG, VISIT)}

    # Leaving ends a member's presence at the SFU; the visit's end destroys the room.
    await sfu_relay.left(rooms, room, patient)
    assert patient.id not in {p.display for p in await rooms.participants(ORG, VISIT)}
    sfu_room = rooms.rooms[(ORG, VISIT)]
    await sfu_relay.ended(rooms, ORG, VISIT)
    assert not rooms.active(ORG, VISIT)
    with pytest.raises(SfuNoSuchRoom):
        await sfu.participants(sfu_room)
    await sfu_relay.handle(rooms, room, clinician, {"type": "sfu-publish", "sdp": "v=0"})
    assert inbox(clinician) == [{"type": "error", "code": "no-sfu", "refused": "sfu-publish"}]


async def test_the_visit_signaling_moves_a_grown_call_to_janus(
    booked: Booked, live: str, janus: janus_server.Janus
) -> None:
    """Through the real signaling: the call moves to the SFU when the third person is admitted (a
    threshold of two here), a waiting guest cannot publish, and the hang-up destroys the room."""
    c, appt = booked.clinic, booked.appointment
    s = c.env.settings
    s.sfu, s.sfu_threshold = "janus", 2
    s.janus_url, s.janus_api_secret, s.janus_admin_key = janus.url, janus.api_secret, janus.admin_key
    assert (await booked.check_in()).status_code == 303
    guest_cookie = await open_guest_link(c, await make_guest_link(c, appt))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        async with (
            connect(live, appt, cookie_of(c, "clinician")) as doctor,
            connect(live, appt, cookie_of(c, "patient")) as patient,
            connect(live, appt, guest_cookie) as guest,
        ):
            await doctor.next("welcome")
            patient_id = (await patient.next("welcome"))["you"]
            guest_id = (await guest.next("welcome"))["you"]
            await guest.send(type="sfu-publish", sdp="v=0")
            assert (await guest.next("error"))["code"] == "not-admitted"
            await doctor.send(type="admit", who=patient_id)
            await patient.next("admitted")
            assert not any(m["type"] == "sfu" for m in await patient.drain())  # two people: peer to peer
            await doctor.send(type="admit", who=guest_id)
            for sock in (doctor, patient, guest):
                assert (await sock.next("sfu"))["on"] is True

            pc.addTransceiver("audio", direction="sendonly")
            pc.addTransceiver("video", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            await patient.send(type="sfu-publish", sdp=pc.localDescription.sdp)
            assert "m=video" in (await patient.next("sfu-answer", within=10))["sdp"]
            assert (await doctor.next("sfu-feed"))["peer"] == patient_id
            assert (await guest.next("sfu-feed"))["peer"] == patient_id

            rooms = sfu_relay.rooms_for(s)
            assert rooms is not None
            sfu_room = rooms.rooms[(c.env.org_id, appt)]
            assert patient_id in {p.display for p in await rooms.participants(c.env.org_id, appt)}
            await doctor.send(type="hangup")
            await guest.next("ended")
        assert not rooms.active(c.env.org_id, appt)
        with pytest.raises(SfuNoSuchRoom):
            await rooms.sfu.participants(sfu_room)
    finally:
        await pc.close()
        await sfu_relay.close_all()


async def test_moving_the_visit_to_the_phone_ends_its_sfu_room(
    booked: Booked, live: str, janus: janus_server.Janus
) -> None:
    c, appt = booked.clinic, booked.appointment
    s = c.env.settings
    s.sfu, s.sfu_threshold = "janus", 1
    s.janus_url, s.janus_api_secret, s.janus_admin_key = janus.url, janus.api_secret, janus.admin_key
    assert (await booked.check_in()).status_code == 303
    try:
        async with (
            connect(live, appt, cookie_of(c, "clinician")) as doctor,
            connect(live, appt, cookie_of(c, "patient")) as patient,
        ):
            await doctor.next("welcome")
            await doctor.send(type="admit", who=(await patient.next("welcome"))["you"])
            assert (await patient.next("sfu"))["on"] is True
            rooms = sfu_relay.rooms_for(s)
            assert rooms is not None and rooms.active(c.env.org_id, appt)
            sfu_room = rooms.rooms[(c.env.org_id, appt)]
            r = await c.form_post("patient", f"/visits/{appt}/phone", {}, form_from=f"/visits/{appt}")
            assert r.status_code == 303
            await doctor.next("phone")

            async def destroyed() -> bool:  # in the background, within a moment
                try:
                    await rooms.sfu.participants(sfu_room)
                except SfuNoSuchRoom:
                    return not rooms.active(c.env.org_id, appt)
                return False

            for _ in range(100):
                if await destroyed():
                    break
                await asyncio.sleep(0.05)
            assert await destroyed()
    finally:
        await sfu_relay.close_all()
