"""TURN: credentials in the TURN REST scheme, minted per participant and only once admitted, that a
real coturn (Debian's, on 127.0.0.1, with a generated secret) accepts until they expire; a
relay-only call between two aiortc peers signaled through the visit; and a guest who came by a
guest link, refused until admitted, then in a relay-only call with the clinician, media both ways."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from housecall.visits import turn
from tests.visits.conftest import Booked, Turn, connect, cookie_of, make_guest_link, open_guest_link


def test_credentials_follow_the_turn_rest_scheme() -> None:
    cred = turn.mint("s3cret", ["turn:127.0.0.1:3478"], "a1b2c3", ttl=600, now=1_800_000_000.7)
    assert cred.username == "1800000600:a1b2c3" and cred.expires == 1_800_000_600
    expected = base64.b64encode(hmac.new(b"s3cret", b"1800000600:a1b2c3", hashlib.sha1).digest()).decode()
    assert cred.password == expected
    assert cred.ice_server() == {
        "urls": ["turn:127.0.0.1:3478"],
        "username": cred.username,
        "credential": expected,
    }
    with pytest.raises(ValueError, match="no TURN secret"):
        turn.mint("", ["turn:x"], "a", ttl=1, now=0)
    with pytest.raises(ValueError, match="opaque"):
        turn.mint("s", ["turn:x"], "Patient:1", ttl=1, now=0)  # ids are opaque and free of ':'


class _Sink:
    def connection_made(self, transport: Any) -> None:
        pass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass

    def connection_lost(self, exc: Any) -> None:
        pass


async def _allocate(server: Turn, username: str, password: str) -> bool:
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(_Sink, ("127.0.0.1", server.port), username, password), 5
        )
    except stun.TransactionFailed:
        return False
    transport.close()
    return True


async def test_coturn_accepts_minted_credentials_until_they_expire(coturn: Turn) -> None:
    fresh = turn.mint(coturn.secret, coturn.urls, "p1", ttl=60, now=time.time())
    assert await _allocate(coturn, fresh.username, fresh.password)
    expired = turn.mint(coturn.secret, coturn.urls, "p1", ttl=60, now=time.time() - 120)
    assert not await _allocate(coturn, expired.username, expired.password)
    forged = turn.mint("not-the-secret", coturn.urls, "p1", ttl=60, now=time.time())
    assert not await _allocate(coturn, forged.username, forged.password)


def _pc(ice: list[dict[str, Any]]) -> RTCPeerConnection:
    servers = [RTCIceServer(urls=s["urls"], username=s["username"], credential=s["credential"]) for s in ice]
    return RTCPeerConnection(
        RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )


def _selected_local_type(pc: RTCPeerConnection) -> set[str]:
    """The types of the local candidates of the pairs ICE nominated (aioice's own record)."""
    types = set()
    for transceiver in pc.getTransceivers():
        ice = transceiver.sender.transport.transport
        types |= {pair.local_candidate.type for pair in ice._connection._nominated.values()}
    return types


async def _connected(pc: RTCPeerConnection, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while pc.connectionState != "connected":
        assert pc.connectionState != "failed" and time.monotonic() < deadline, pc.connectionState
        await asyncio.sleep(0.05)


async def test_a_relay_only_call_through_coturn_with_credentials_from_the_visit(
    booked: Booked, live: str, coturn: Turn
) -> None:
    c, appt = booked.clinic, booked.appointment
    c.env.settings.turn_urls = coturn.urls
    c.env.settings.turn_secret = coturn.secret
    assert (await booked.check_in()).status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        doctor_id = (await doctor.next("welcome"))["you"]
        patient_id = (await patient.next("welcome"))["you"]
        await patient.send(type="turn")
        assert (await patient.next("error"))["refused"] == "turn"  # not before admission
        await doctor.send(type="admit", who=patient_id)
        await patient.next("admitted")
        ice: dict[str, list[dict[str, Any]]] = {}
        for who, sock in (("doctor", doctor), ("patient", patient)):
            await sock.send(type="turn")
            answer = await sock.next("turn")
            assert answer["expires"] - time.time() == pytest.approx(
                c.env.settings.turn_credential_seconds, abs=5
            )
            ice[who] = answer["iceServers"]
            user = ice[who][0]["username"]
            assert user.split(":")[1] in (doctor_id, patient_id) and c.patient not in user  # opaque
        assert ice["doctor"][0]["username"] != ice["patient"][0]["username"]  # per participant

        caller, callee = _pc(ice["doctor"]), _pc(ice["patient"])
        caller.addTrack(VideoStreamTrack())
        caller.addTrack(AudioStreamTrack())
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @callee.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video" and not got.done():
                got.set_result(track)

        try:
            await caller.setLocalDescription(await caller.createOffer())
            await doctor.send(
                type="offer", to=patient_id, data={"type": "offer", "sdp": caller.localDescription.sdp}
            )
            offer = await patient.next("offer")
            await callee.setRemoteDescription(RTCSessionDescription(**offer["data"]))
            await callee.setLocalDescription(await callee.createAnswer())
            assert (
                " typ relay" in callee.localDescription.sdp and " typ host" not in callee.localDescription.sdp
            )
            await patient.send(
                type="answer", to=doctor_id, data={"type": "answer", "sdp": callee.localDescription.sdp}
            )
            answer_msg = await doctor.next("answer")
            await caller.setRemoteDescription(RTCSessionDescription(**answer_msg["data"]))
            await _connected(caller)
            await _connected(callee)
            track = await asyncio.wait_for(got, 10)
            frame = await asyncio.wait_for(track.recv(), 10)
            assert frame.width > 0
            assert _selected_local_type(caller) == {"relay"} and _selected_local_type(callee) == {"relay"}
        finally:
            await caller.close()
            await callee.close()


async def test_an_aiortc_peer_cannot_reach_the_clinician_before_admission(booked: Booked, live: str) -> None:
    """A real WebRTC peer in the waiting room: its offer goes nowhere and it gets no TURN server;
    the same peer, once admitted, connects and receives the clinician's video."""
    c, appt = booked.clinic, booked.appointment
    assert (await booked.check_in()).status_code == 303
    async with connect(live, appt, cookie_of(c, "clinician")) as doctor, \
               connect(live, appt, cookie_of(c, "patient")) as patient:  # fmt: skip
        doctor_id = (await doctor.next("welcome"))["you"]
        patient_id = (await patient.next("welcome"))["you"]
        waiting_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never Google's STUN
        doctor_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        waiting_pc.addTrack(VideoStreamTrack())
        doctor_pc.addTrack(VideoStreamTrack())
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @waiting_pc.on("track")
        def on_track(track: Any) -> None:
            if not got.done():
                got.set_result(track)

        try:
            await waiting_pc.setLocalDescription(await waiting_pc.createOffer())
            offer = {"type": "offer", "sdp": waiting_pc.localDescription.sdp}
            await patient.send(type="offer", to=doctor_id, data=offer)
            assert (await patient.next("error"))["code"] == "not-admitted"
            await patient.send(type="turn")
            assert (await patient.next("error"))["refused"] == "turn"
            assert [m for m in await doctor.drain(0.5) if m["type"] == "offer"] == []
            assert doctor_pc.connectionState == "new" and waiting_pc.connectionState == "new"

            await doctor.send(type="admit", who=patient_id)
            await patient.next("admitted")
            await patient.send(type="offer", to=doctor_id, data=offer)
            relayed = await doctor.next("offer")
            await doctor_pc.setRemoteDescription(RTCSessionDescription(**relayed["data"]))
            await doctor_pc.setLocalDescription(await doctor_pc.createAnswer())
            await doctor.send(type="answer", to=patient_id,
                              data={"type": "answer", "sdp": doctor_pc.localDescription.sdp})  # fmt: skip
            answer = await patient.next("answer")
            await waiting_pc.setRemoteDescription(RTCSessionDescription(**answer["data"]))
            await _connected(waiting_pc)
            frame = await asyncio.wait_for((await asyncio.wait_for(got, 10)).recv(), 10)
            assert frame.width > 0
        finally:
            await waiting_pc.close()
            await doctor_pc.close()


async def test_a_guest_by_link_waits_then_calls_the_clinician_relay_only(
    booked: Booked, live: str, coturn: Turn
) -> None:
    """An aiortc guest who opened a guest link: everything it sends before admission is refused and
    reaches nobody; once admitted it gets its own TURN credentials and a relay-only call with the
    clinician carries video and audio both ways through coturn."""
    c, appt = booked.clinic, booked.appointment
    c.env.settings.turn_urls = coturn.urls
    c.env.settings.turn_secret = coturn.secret
    assert (await booked.check_in()).status_code == 303
    guest_cookie = await open_guest_link(c, await make_guest_link(c, appt, "Interpreter"))
    async with (
        connect(live, appt, cookie_of(c, "clinician")) as doctor,
        connect(live, appt, guest_cookie) as guest,
    ):
        doctor_id = (await doctor.next("welcome"))["you"]
        hello = await guest.next("welcome")
        guest_id = hello["you"]
        assert hello["role"] == "guest" and hello["admitted"] is False
        assert (await guest.next("waiting"))["position"] >= 1

        early = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        early.addTrack(VideoStreamTrack())
        try:
            await early.setLocalDescription(await early.createOffer())
            sdp = early.localDescription.sdp
            line = next(x for x in sdp.splitlines() if x.startswith("a=candidate:"))
            for message in (
                {"type": "offer", "to": doctor_id, "data": {"type": "offer", "sdp": sdp}},
                {"type": "candidate", "to": doctor_id, "data": {"candidate": line[2:], "sdpMid": "0"}},
                {"type": "chat", "text": "let me in"},
                {"type": "turn"},
            ):
                await guest.send(**message)
                assert await guest.next("error") == {
                    "type": "error",
                    "code": "not-admitted",
                    "refused": message["type"],
                }
        finally:
            await early.close()
        assert [m for m in await doctor.drain(0.5) if m["type"] in ("offer", "candidate", "chat")] == []

        await doctor.send(type="admit", who=guest_id)
        assert (await guest.next("admitted"))["by"] == "Maya Carter"
        ice = {}
        for who, sock in (("doctor", doctor), ("guest", guest)):
            await sock.send(type="turn")
            ice[who] = (await sock.next("turn"))["iceServers"]
        assert ice["guest"][0]["username"].endswith(":" + guest_id)

        guest_pc, doctor_pc = _pc(ice["guest"]), _pc(ice["doctor"])
        received: dict[str, dict[str, asyncio.Future[Any]]] = {}
        for name, pc in (("guest", guest_pc), ("doctor", doctor_pc)):
            pc.addTrack(VideoStreamTrack())
            pc.addTrack(AudioStreamTrack())
            futures = {kind: asyncio.get_running_loop().create_future() for kind in ("video", "audio")}
            received[name] = futures

            def on_track(track: Any, futures: dict[str, asyncio.Future[Any]] = futures) -> None:
                if not futures[track.kind].done():
                    futures[track.kind].set_result(track)

            pc.on("track", on_track)
        try:
            await guest_pc.setLocalDescription(await guest_pc.createOffer())
            await guest.send(
                type="offer", to=doctor_id, data={"type": "offer", "sdp": guest_pc.localDescription.sdp}
            )
            offer = await doctor.next("offer")
            assert (
                offer["from"] == guest_id
                and offer["fromRole"] == "guest"
                and offer["fromName"] == "Interpreter"
            )
            await doctor_pc.setRemoteDescription(RTCSessionDescription(**offer["data"]))
            await doctor_pc.setLocalDescription(await doctor_pc.createAnswer())
            await doctor.send(type="answer", to=guest_id,
                              data={"type": "answer", "sdp": doctor_pc.localDescription.sdp})  # fmt: skip
            answer = await guest.next("answer")
            await guest_pc.setRemoteDescription(RTCSessionDescription(**answer["data"]))
            await _connected(guest_pc)
            await _connected(doctor_pc)
            for name in ("guest", "doctor"):
                video = await asyncio.wait_for(received[name]["video"], 10)
                assert (await asyncio.wait_for(video.recv(), 10)).width > 0
                audio = await asyncio.wait_for(received[name]["audio"], 10)
                assert (await asyncio.wait_for(audio.recv(), 10)).samples > 0
            assert _selected_local_type(guest_pc) == {"relay"} and _selected_local_type(doctor_pc) == {
                "relay"
            }
        finally:
            await guest_pc.close()
            await doctor_pc.close()
