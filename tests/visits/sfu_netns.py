"""Two aiortc peers meet through a real Janus VideoRoom, inside a network namespace of their own.

Run as root under ``unshare --net`` (``tests/visits/test_sfu_janus.py`` does):
``unshare --net python -m tests.visits.sfu_netns WORKDIR``. The namespace has only loopback, so
nothing leaves it. libnice skips loopback interfaces, so a veth pair is added with 10.77.0.1 on one
end, Janus gathers on that end only (``ice_enforce_list``) and the aiortc peers are told it is
their host address. The scenario goes through the visit's room life cycle (``SfuRooms`` over
``JanusSfu``) and prints one JSON object of what it saw; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aioice.ice
import av
import orjson
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from housecall.access.actor import system_actor
from housecall.visits import sfu_relay
from housecall.visits.janus import JanusSfu
from housecall.visits.sfu import JoinGrant, SfuError, SfuRoom, SfuRooms
from housecall.visits.signal import Member, Room
from tests.visits import janus_server

ADDRESS = "10.77.0.1"
INTERFACE = "hc0"
ORG, VISIT = "org-1", "appointment-1"
# A solid colour per sender, as (Y, U, V): each receiver checks it gets the OTHER one's picture.
COLOURS = {"alice": (81, 90, 240), "bob": (41, 240, 110)}  # red, blue


def network() -> None:
    """Loopback up, and a veth pair whose one end carries the address Janus and the peers use."""
    for cmd in (["ip", "link", "set", "lo", "up"],
                ["ip", "link", "add", INTERFACE, "type", "veth", "peer", "name", "hc1"],
                ["ip", "addr", "add", f"{ADDRESS}/24", "dev", INTERFACE],
                ["ip", "link", "set", INTERFACE, "up"], ["ip", "link", "set", "hc1", "up"]):  # fmt: skip
        subprocess.run(cmd, check=True)


class Colour(MediaStreamTrack):
    """A 160 by 120 camera showing one solid colour at 15 frames a second."""

    kind = "video"

    def __init__(self, yuv: tuple[int, int, int]) -> None:
        super().__init__()
        self.yuv = yuv
        self.pts = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 15)
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane, value in zip(frame.planes, self.yuv, strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        self.pts += 6000
        frame.pts, frame.time_base = self.pts, fractions.Fraction(1, 90000)
        return frame


def plane_mean(frame: av.VideoFrame, index: int) -> float:
    """The mean of a plane's pixels (its rows are padded to ``line_size``)."""
    plane = frame.planes[index]
    data, width = bytes(plane), plane.width
    rows = [data[i : i + width] for i in range(0, plane.height * plane.line_size, plane.line_size)]
    return sum(sum(r) for r in rows) / (width * plane.height)


class Seen:
    """What one receiving peer decoded: video frames (and their colour) and audio frames."""

    def __init__(self) -> None:
        self.frames = 0
        self.audio = 0
        self.u: float | None = None
        self.v: float | None = None

    async def read(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames += 1
                    self.u, self.v = plane_mean(frame, 1), plane_mean(frame, 2)
                else:
                    self.audio += 1


async def wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


def member(name: str, *, admitted: bool) -> Member:
    """A member of the visit's signaling room without a socket: messages to it queue in ``out``."""
    return Member(None, "guest", name, None, system_actor(ORG), id=name, admitted=admitted)  # type: ignore[arg-type]


MAILBOX: dict[str, list[dict[str, Any]]] = {}


def take(m: Member, kind: str) -> dict[str, Any]:
    """The first message of ``kind`` sent to ``m`` and not taken yet (others stay for later)."""
    box = MAILBOX.setdefault(m.id, [])
    while not m.out.empty():
        data = m.out.get_nowait()
        box.append(orjson.loads(data) if data else {})
    for i, message in enumerate(box):
        if message.get("type") == kind:
            return box.pop(i)
    raise AssertionError(f"{m.id} got no {kind}: {box}")


async def publish(rooms: SfuRooms, room: Room, who: Member) -> RTCPeerConnection:
    """``who``'s page publishes its camera and microphone through the visit's signaling."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(Colour(COLOURS[who.id]), direction="sendonly")
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers every candidate here
    await sfu_relay.handle(rooms, room, who, {"type": "sfu-publish", "sdp": pc.localDescription.sdp})
    await pc.setRemoteDescription(RTCSessionDescription(take(who, "sfu-answer")["sdp"], "answer"))
    return pc


async def receive(rooms: SfuRooms, room: Room, who: Member, peer: str, seen: Seen) -> RTCPeerConnection:
    """``who``'s page receives ``peer`` through the SFU: the SFU offers, the page answers."""
    await sfu_relay.handle(rooms, room, who, {"type": "sfu-subscribe", "peer": peer})
    offer = take(who, "sfu-offer")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.on("track", lambda track: asyncio.ensure_future(seen.read(track)))
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await sfu_relay.handle(
        rooms, room, who, {"type": "sfu-start", "key": offer["key"], "sdp": pc.localDescription.sdp}
    )
    take(who, "sfu-started")
    return pc


async def refused(call: Any) -> str:
    """The error code a call ends with ("accepted" if it did not fail)."""
    try:
        await call
    except SfuError as exc:
        return exc.code
    return "accepted"


async def scenario(janus: janus_server.Janus) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sfu = JanusSfu(janus.url, api_secret=janus.api_secret, admin_key=janus.admin_key, timeout=10, keepalive=2)
    rooms = SfuRooms(sfu, threshold=1)  # two people are enough to go through the SFU here
    visit_room = Room(ORG, VISIT, ["practitioner-1"])
    alice, bob = member("alice", admitted=True), member("bob", admitted=True)
    eve = member("eve", admitted=False)  # still in the waiting room
    for m in (alice, bob, eve):
        visit_room.members[m.id] = m
    pcs: list[RTCPeerConnection] = []
    try:
        await sfu_relay.admitted(rooms, visit_room, alice)
        await sfu_relay.admitted(rooms, visit_room, bob)
        out["sfu_on"] = [take(m, "sfu") for m in (alice, bob)] == [{"type": "sfu", "on": True}] * 2
        room = rooms.rooms[(ORG, VISIT)]
        out["grant_for_waiting"] = await refused(rooms.grant_for(ORG, VISIT, eve))
        await sfu_relay.handle(rooms, visit_room, eve, {"type": "sfu-publish", "sdp": "v=0"})
        out["publish_waiting"] = take(eve, "error")["code"]

        started = time.monotonic()
        pc_a = await publish(rooms, visit_room, alice)
        pc_b = await publish(rooms, visit_room, bob)
        pcs += [pc_a, pc_b]
        out["told_of_feeds"] = [take(bob, "sfu-feed")["peer"], take(alice, "sfu-feed")["peer"]]
        out["published"] = await wait_for(
            lambda: pc_a.connectionState == "connected" and pc_b.connectionState == "connected", 15
        )
        out["janus_webrtcup"] = await wait_for(lambda: sfu.media_up("alice") and sfu.media_up("bob"), 5)
        present = await rooms.participants(ORG, VISIT)
        out["participants"] = sorted(p.display for p in present if p.publishing)
        feeds = {p.display: p.feed for p in present}

        # Bob may not answer an offer the SFU made to Alice.
        await sfu_relay.handle(rooms, visit_room, alice, {"type": "sfu-subscribe", "peer": "bob"})
        stolen = take(alice, "sfu-offer")["key"]
        await sfu_relay.handle(rooms, visit_room, bob, {"type": "sfu-start", "key": stolen, "sdp": "v=0"})
        out["start_others_offer"] = take(bob, "error")["code"]

        seen_by_alice, seen_by_bob = Seen(), Seen()
        pcs.append(await receive(rooms, visit_room, alice, "bob", seen_by_alice))
        pcs.append(await receive(rooms, visit_room, bob, "alice", seen_by_bob))
        out["media"] = await wait_for(
            lambda: min(seen_by_alice.frames, seen_by_bob.frames) >= 5 and min(seen_by_alice.audio, seen_by_bob.audio) >= 5,
            20,
        )  # fmt: skip
        out["seconds_to_media"] = round(time.monotonic() - started, 2)
        out["alice_saw"] = {"frames": seen_by_alice.frames, "audio": seen_by_alice.audio,
                            "u": seen_by_alice.u, "v": seen_by_alice.v}  # fmt: skip
        out["bob_saw"] = {"frames": seen_by_bob.frames, "audio": seen_by_bob.audio,
                          "u": seen_by_bob.u, "v": seen_by_bob.v}  # fmt: skip

        # Nobody without a grant gets in: a made-up token, a revoked one, an expired one, a wrong pin.
        forged = JoinGrant(room=room.id, participant="mallory", token="made-up", expires=time.time() + 60)
        out["forged_publish"] = await refused(sfu.publish(room, forged, pc_a.localDescription.sdp))
        out["forged_subscribe"] = await refused(sfu.subscribe(room, forged, feeds["alice"]))
        carol = member("carol", admitted=True)
        carol_grant = await rooms.grant_for(ORG, VISIT, carol)
        await rooms.remove(ORG, VISIT, "carol")
        out["revoked_subscribe"] = await refused(sfu.subscribe(room, carol_grant, feeds["alice"]))
        expired = JoinGrant(
            room=room.id, participant="dave", token=carol_grant.token, expires=time.time() - 1
        )
        out["expired_subscribe"] = await refused(sfu.subscribe(room, expired, feeds["alice"]))
        wrong_pin = SfuRoom(room.visit, room.id, room.secret, "wrong-pin", room.publishers)
        frank = await sfu.grant(room, "frank", seconds=60)
        out["wrong_pin_subscribe"] = await refused(sfu.subscribe(wrong_pin, frank, feeds["alice"]))
        out["right_pin_subscribe"] = await refused(sfu.subscribe(room, frank, feeds["alice"]))
        await sfu.leave("frank")

        # Held past Janus's session timeout (4 s here) by the keepalives: the call still flows.
        frames = seen_by_alice.frames
        await asyncio.sleep(6)
        out["after_timeout"] = {"frames_more": seen_by_alice.frames - frames,
                                "participants": len(await rooms.participants(ORG, VISIT))}  # fmt: skip

        # Removing bob ends his upstream: he is no longer in the room.
        await sfu_relay.left(rooms, visit_room, bob)
        out["after_remove"] = sorted(p.display for p in await rooms.participants(ORG, VISIT) if p.publishing)

        # The visit ends: the room is destroyed and alice's media through it stops.
        await sfu_relay.ended(rooms, ORG, VISIT)
        out["after_end"] = await refused(sfu.participants(room))
        out["join_after_end"] = await refused(sfu.subscribe(room, frank, feeds["alice"]))
        out["alice_connection_after_end"] = (
            "closed" if await wait_for(lambda: pc_a.connectionState in ("closed", "failed"), 10)
            else pc_a.connectionState
        )  # fmt: skip
        frames = seen_by_bob.frames
        await asyncio.sleep(1)
        out["frames_after_end"] = seen_by_bob.frames - frames
        await sfu_relay.ended(rooms, ORG, VISIT)  # idempotent
    finally:
        for pc in pcs:
            await pc.close()
        await sfu.close()
    return out


def main() -> None:
    work = Path(sys.argv[1])
    network()
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [ADDRESS]  # type: ignore[assignment]
    with janus_server.running(work, port=8088, interface=INTERFACE, session_timeout=4) as janus:
        result = asyncio.run(scenario(janus))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
