"""The visit's signaling: one authenticated WebSocket per participant, a typed JSON relay, and the
waiting room enforced here, on the server.

``/visits/{appointment_id}/signal`` accepts the page session of the visit's patient (or a proxy
acting for them; signed in, or by the visit-only session a join link started), of a clinician on
the Appointment, or of another care-team member (who may see the waiting room and write to it,
never join the call), or a guest: the browser that first opened a guest link, known by its guest
cookie (never by the link's token, so a forwarded link reaches nobody; decision 0021).
Everyone except the visit's clinicians starts **waiting**; until a clinician admits them the server
refuses their ``offer``/``answer``/``candidate``, ``chat``, ``state`` and ``turn`` messages (an
``error`` with code ``not-admitted`` comes back, and nothing reaches anyone), and nobody may send
them media signaling either. The patient must have checked in (state, phone) in a state the
clinicians are licensed in before the socket even opens.

Messages (JSON objects with a ``type``):

- client → server: ``offer``/``answer``/``candidate`` ``{to, data}`` (``data`` is relayed untouched:
  the server never parses SDP), ``chat {text}``, ``state {data: {audio, video, mode, auto}}`` (``auto``: the page's own step-down
  to audio only on poor stats), ``turn``,
  ``admit {who}`` and ``notice {who, text}`` (clinicians), ``hangup``;
- server → client: ``welcome``, ``waiting {position, ahead, minutes}`` (live), ``admitted``,
  ``peers``, ``joined``/``left``, ``lobby`` (clinicians: who waits, their state and check verdict),
  the relayed messages with ``from``/``fromName``/``fromRole`` stamped by the server, ``chat``,
  ``notice``, ``chat`` with ``file {name, contentType, size, url}`` for a file shared over HTTP
  (``push_file``), ``turn {iceServers, expires}``, ``phone``, ``ended``, ``error {code}``.

Rooms live in this process (``HUB``); see decision 0018 for running several processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.requests import Request

from housecall.access.actor import Actor, system_actor
from housecall.core.db import Database
from housecall.core.settings import Settings
from housecall.fhir.errors import FhirError
from housecall.identity import sessions
from housecall.visits import guests, join, service, sfu_relay, turn
from housecall.visits.service import Visit, VisitError
from housecall.web import records
from housecall.workspace.inbox import person_name

log = logging.getLogger(__name__)
router = APIRouter()

MAX_MESSAGE = 64 * 1024  # an SDP with many candidates is ~10 kB
MAX_QUEUED = 200  # messages waiting for a slow client before it is dropped
REFRESH_SECONDS = 30.0  # the waiting room's position is sent again at least this often
LINE_MAX_AGE = REFRESH_SECONDS / 2  # a clinician's line is read again at least this often
CHAT_PER_MINUTE = 30  # chat lines one member may store per minute
RELAYED = frozenset({"offer", "answer", "candidate"})
# What a phone or chat visit never carries (decision 0025): no media connection, no TURN, no SFU.
MEDIA = RELAYED | {"turn"} | sfu_relay.MESSAGES
ADMITTED_ONLY = RELAYED | {"chat", "state", "turn"} | sfu_relay.MESSAGES


@dataclass(eq=False)
class Member:
    """One open socket in a room."""

    ws: WebSocket
    role: str  # patient | clinician | staff | guest
    name: str
    ref: str | None  # who, for the record: Patient/…, RelatedPerson/…, Practitioner/…; None for guests
    actor: Actor
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    admitted: bool = False
    state: str | None = None  # the patient's location state (shown to clinicians)
    check: str | None = None  # the patient's latest technology check verdict
    since: float = field(default_factory=time.time)
    out: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    chat_times: list[float] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        if self.out.qsize() >= MAX_QUEUED:
            self.out.put_nowait(None)  # too slow: close it rather than hold memory
            return
        self.out.put_nowait(orjson.dumps(message))

    def card(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "name": self.name, "admitted": self.admitted,
                "state": self.state, "check": self.check, "since": int(self.since * 1000)}  # fmt: skip


@dataclass(eq=False)
class Room:
    org_id: str
    appointment_id: str
    practitioners: list[str]
    media: bool = True  # a video visit; False for a visit booked as phone or chat
    members: dict[str, Member] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def admitted(self) -> list[Member]:
        return [m for m in self.members.values() if m.admitted]

    def broadcast(
        self, message: dict[str, Any], *, admitted_only: bool = True, but: Member | None = None
    ) -> None:
        for m in self.members.values():
            if m is not but and (m.admitted or not admitted_only):
                m.send(message)

    def send_lobby(self) -> None:
        lobby = {"type": "lobby", "members": [m.card() for m in self.members.values() if m.role != "staff"]}
        for m in self.members.values():
            if m.role in ("clinician", "staff"):
                m.send(lobby)

    def send_peers(self) -> None:
        # Callers learn each other's id, role and name only (not where the patient is, nor checks).
        peers = [{"id": m.id, "role": m.role, "name": m.name} for m in self.admitted()]
        for m in self.admitted():
            m.send({"type": "peers", "you": m.id, "peers": [p for p in peers if p["id"] != m.id]})


@dataclass(eq=False)
class Line:
    """One clinician's line as last read from the store, shared by everyone waiting for her: a
    change in it wakes them all and the first one reads it again for all of them, instead of one
    search per waiting socket (which held a process to ~1,000 waiting patients). Each member's
    place and minutes are still worked out at the moment they are sent (``service.place_in``)."""

    rooms: set[Room] = field(default_factory=set)  # rooms here naming this clinician; forgotten when none
    version: int = 0  # moved by every change (Hub.queue_changed)
    read_version: int = -1  # the version the last read began at
    read_at: float = 0.0  # time.monotonic() of the last read
    queued: list[service.Queued] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self, read: Callable[[], Awaitable[list[service.Queued]]]) -> list[service.Queued]:
        """The line, read again only after a change or when older than ``LINE_MAX_AGE`` (changes
        this process does not see: another process, the API)."""
        async with self.lock:
            if self.read_version != self.version or time.monotonic() - self.read_at >= LINE_MAX_AGE:
                version = self.version  # a change during the read makes the next caller read again
                self.queued = await read()
                self.read_version, self.read_at = version, time.monotonic()
            return self.queued


class Hub:
    """The rooms of this process, and which clinician's queue each belongs to."""

    def __init__(self) -> None:
        self.rooms: dict[tuple[str, str], Room] = {}
        # (org, clinician) -> her line, and the rooms to wake when it changes (no scan of every room)
        self.lines: dict[tuple[str, str], Line] = {}

    def room(self, org_id: str, visit: Visit) -> Room:
        key = (org_id, visit.id)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(org_id, visit.id, visit.practitioners)
            for p in room.practitioners:
                self.lines.setdefault((org_id, p), Line()).rooms.add(room)
        return room

    def line(self, room: Room) -> Line | None:
        """The line the room's patient waits in (the first clinician's, as ``place_in_line``)."""
        return self.lines.get((room.org_id, room.practitioners[0])) if room.practitioners else None

    def find(self, org_id: str, appointment_id: str) -> Room | None:
        return self.rooms.get((org_id, appointment_id))

    def leave(self, room: Room, member: Member) -> None:
        room.members.pop(member.id, None)
        if not room.members and self.rooms.pop((room.org_id, room.appointment_id), None) is room:
            for p in room.practitioners:
                line = self.lines.get((room.org_id, p))
                if line is not None:
                    line.rooms.discard(room)
                    if not line.rooms:
                        del self.lines[(room.org_id, p)]

    def queue_changed(self, org_id: str, practitioners: list[str]) -> None:
        """Something moved in these clinicians' lines: every waiting patient recomputes now."""
        rooms: set[Room] = set()
        for p in set(practitioners):
            line = self.lines.get((org_id, p))
            if line is not None:
                line.version += 1
                rooms |= line.rooms
        for room in rooms:
            for m in room.members.values():
                if not m.admitted:
                    m.wake.set()


HUB = Hub()


def _settings(ws: WebSocket) -> Settings:
    return ws.app.state.settings  # type: ignore[no-any-return]


def _db(ws: WebSocket) -> Database:
    return ws.app.state.db  # type: ignore[no-any-return]


def _as_request(ws: WebSocket) -> Request:
    # records and sessions read cookies, headers, client and app state: a WebSocket has them all.
    return cast(Request, ws)


def same_origin(ws: WebSocket) -> bool:
    """Cross-site WebSocket hijacking: a browser sends cookies with a handshake another site's
    page starts, so the Origin must be our own (the public URL or the host the request came to)."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser (a test client, a native app): cookies are its own
    parts = urlsplit(origin)
    public = urlsplit(_settings(ws).public_url)
    if parts.netloc and parts.netloc == public.netloc:
        return True
    return parts.netloc == ws.headers.get("host", "")


async def _guest(ws: WebSocket, appointment_id: str) -> guests.Guest | None:
    """The visit's guest this browser is (its guest cookie), or None."""
    async with _db(ws).reader() as conn:
        return await guests.guest_of_browser(conn, ws.cookies.get(guests.COOKIE), appointment_id)


async def _who(ws: WebSocket, appointment_id: str) -> tuple[Actor, str, str, str | None, Visit] | int:
    """(actor, role, display name, reference, visit) or the close code to refuse with."""
    request = _as_request(ws)
    actor = await sessions.actor_for_request(request) or await join.visit_actor(
        _db(ws), request, appointment_id
    )
    if actor is not None:
        async with records.reading(request, actor) as rec:
            visit = await service.load_visit(rec, appointment_id)
            role = service.role_in(actor, visit) if visit is not None else None
            if visit is not None and role is not None:
                return await _person(rec, actor, role, visit)
    # No one of the visit by their session: the browser a guest link was bound to, if it is one
    # (a family member signed in to their own portal in the same browser is still the guest).
    guest = await _guest(ws, appointment_id)
    if guest is None or (actor is not None and actor.org_id != guest.org_id):
        return 4401 if actor is None else 4404
    system = system_actor(guest.org_id)  # the guest reads nothing; the visit is looked up for them
    async with records.reading(request, system) as rec:
        visit = await service.load_visit(rec, appointment_id)
    if visit is None:
        return 4404
    if visit.status == "finished":
        return 4410
    return system, "guest", guest.display, None, visit


async def _person(
    rec: records.Records, actor: Actor, role: str, visit: Visit
) -> tuple[Actor, str, str, str | None, Visit] | int:
    """A person of the visit (patient or proxy, clinician, care team), or why they may not come in."""
    if visit.status == "finished":
        return 4410
    name = ""
    if actor.fhir_user and role in ("patient", "clinician"):
        kind, _, rid = actor.fhir_user.partition("/")
        name = person_name(await rec.read(kind, rid))
    if role == "patient":
        if visit.status == "booked" or visit.location_state is None:
            return 4409  # check in first (state and phone), on the page
        if await service.unlicensed(rec, visit, visit.location_state):
            return 4451  # not licensed where the patient is: the visit cannot start
    return actor, role, name or role, actor.fhir_user, visit


async def _writer(member: Member) -> None:
    while True:
        data = await member.out.get()
        if data is None:
            await member.ws.close(code=4408)
            return
        await member.ws.send_text(data.decode())


async def _waiting_updates(ws: WebSocket, room: Room, member: Member, visit: Visit) -> None:
    """Push the waiting patient's place in line now, on every change of the clinician's queue, and
    at least every ``REFRESH_SECONDS`` (time passes for the visit in progress)."""
    while not member.admitted:
        member.wake.clear()
        try:
            place = await _place(ws, room, member, visit)
            member.send({"type": "waiting", "position": place.position, "ahead": place.ahead,
                         "minutes": place.minutes})  # fmt: skip
        except Exception:  # a failed estimate must not end the visit; the next wake tries again
            log.exception("waiting-room estimate failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(member.wake.wait(), REFRESH_SECONDS)


async def _place(ws: WebSocket, room: Room, member: Member, visit: Visit) -> service.Place:
    """The member's place now, from the clinician's shared line (read at most once per change)."""
    if not room.practitioners:
        return service.Place(1, 0, 0)
    line = HUB.line(room) or Line()  # a room the hub no longer holds reads for itself

    async def read() -> list[service.Queued]:
        async with records.reading(_as_request(ws), member.actor) as rec:
            return await service.clinicians_line(rec, room.practitioners[0])

    return service.place_in(await line.current(read), visit, service.now_dt())


@router.websocket("/visits/{appointment_id}/signal")
async def signal(ws: WebSocket, appointment_id: str) -> None:
    # Signed-in patient/proxy of the visit (or a join link's visit-only session), its clinicians,
    # care-team staff, or the browser a guest link was bound to.
    if not same_origin(ws):
        await ws.close(code=4403)  # before the handshake: the browser gets a plain 403
        return
    who = await _who(ws, appointment_id)
    await ws.accept()
    if isinstance(who, int):
        # Accepted, then closed with a code the page can explain (4401 sign in, 4404 no such
        # visit for you, 4409 check in first, 4410 ended, 4451 not licensed where you are).
        await ws.close(code=who)
        return
    actor, role, name, ref, visit = who
    room = HUB.room(actor.org_id, visit)
    room.media = visit.booked_mode == "video"  # a phone or chat visit carries no media (decision 0025)
    member = Member(ws, role, name, ref, actor)
    # A clinician of the visit is in the call from the start; a patient whose visit is already in
    # progress comes back in after a dropped connection; everyone else waits to be admitted.
    member.admitted = role == "clinician" or (role == "patient" and visit.status == "in-progress")
    if role == "patient":
        member.state = visit.location_state
        with contextlib.suppress(FhirError):
            async with records.reading(_as_request(ws), actor) as rec:
                checks = await service.latest_checks(rec, [str(visit.patient_id)])
            member.check = checks.get(str(visit.patient_id))
    room.members[member.id] = member
    writer = asyncio.get_running_loop().create_task(_writer(member))
    waiting: asyncio.Task[None] | None = None
    member.send({"type": "welcome", "you": member.id, "role": role, "admitted": member.admitted,
                 "status": visit.status, "modality": visit.modality})  # fmt: skip
    if member.admitted:
        room.broadcast({"type": "joined", "peer": {"id": member.id, "role": role, "name": name}}, but=member)
        room.send_peers()
        if room.media:
            await sfu_relay.admitted(sfu_relay.rooms_for(_settings(ws)), room, member)
    elif role != "staff":
        waiting = asyncio.get_running_loop().create_task(_waiting_updates(ws, room, member, visit))
    room.send_lobby()
    try:
        while True:
            text = await ws.receive_text()
            if len(text) > MAX_MESSAGE:
                member.send({"type": "error", "code": "too-large"})
                continue
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                member.send({"type": "error", "code": "bad-json"})
                continue
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                member.send({"type": "error", "code": "bad-message"})
                continue
            try:
                if await _handle(ws, room, member, message) == "close":
                    break
            except VisitError as exc:
                member.send({"type": "error", "code": exc.code, "refused": message["type"]})
            except FhirError:  # refused by the access path or validation: say so, keep the call
                member.send({"type": "error", "code": "refused", "refused": message["type"]})
    except WebSocketDisconnect:
        pass
    finally:
        if waiting is not None:
            waiting.cancel()
        HUB.leave(room, member)
        if member.admitted:
            room.broadcast({"type": "left", "peer": member.id})
            await sfu_relay.left(sfu_relay.rooms_for(_settings(ws)), room, member)
        room.send_lobby()
        HUB.queue_changed(actor.org_id, room.practitioners)
        member.out.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 2)
        writer.cancel()


async def _handle(ws: WebSocket, room: Room, member: Member, message: dict[str, Any]) -> str | None:
    kind = message["type"]
    if kind in ADMITTED_ONLY and not member.admitted:
        member.send({"type": "error", "code": "not-admitted", "refused": kind})
        return None
    if kind in MEDIA and not room.media:
        member.send({"type": "error", "code": "no-media", "refused": kind})
        return None
    stamp = {"from": member.id, "fromName": member.name, "fromRole": member.role}
    if kind in RELAYED:
        target = room.members.get(str(message.get("to", "")))
        if target is None or not target.admitted or target is member:
            member.send({"type": "error", "code": "no-such-peer", "refused": kind})
            return None
        target.send({"type": kind, **stamp, "data": message.get("data")})
        return None
    if kind in sfu_relay.MESSAGES:
        await sfu_relay.handle(sfu_relay.rooms_for(_settings(ws)), room, member, message)
        return None
    if kind == "turn":
        servers, expires = turn.ice_servers(_settings(ws), member.id, now=time.time())
        member.send({"type": "turn", "iceServers": servers, "expires": expires})
        return None
    if kind == "chat":
        now = time.monotonic()
        member.chat_times = [t for t in member.chat_times if now - t < 60][-CHAT_PER_MINUTE:]
        if len(member.chat_times) >= CHAT_PER_MINUTE:
            member.send({"type": "error", "code": "too-fast", "refused": kind})
            return None
        member.chat_times.append(now)
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            member.send({"type": "error", "code": "empty"})
            return None
        async with records.writing(_as_request(ws), member.actor) as rec:
            visit = await _visit(rec, room)
            comm = await service.record_chat(rec, visit, text, sender=member.ref,
                                             guest=member.name if member.role == "guest" else None)  # fmt: skip
        room.broadcast({"type": "chat", **stamp, "text": comm["payload"][0]["contentString"], "id": comm["id"],
                        "sent": comm["sent"]})  # fmt: skip
        return None
    if kind == "state":
        data = message.get("data")
        if not isinstance(data, dict):
            return None
        clean = {k: bool(data[k]) for k in ("audio", "video") if k in data}
        mode = data.get("mode")
        if mode in ("video", "audio"):
            clean["mode"] = mode
            # The page stepped down by itself on poor stats: recorded as automatic (on whose
            # connection), and the others are told so.
            auto = mode == "audio" and data.get("auto") is True
            if auto:
                clean["auto"] = True
            async with room.lock, records.writing(_as_request(ws), member.actor) as rec:
                visit = await _visit(rec, room)
                await service.change_modality(rec, visit, str(mode), by=member.ref, auto=auto)
        room.broadcast({"type": "state", **stamp, "data": clean}, but=member)
        return None
    if kind == "admit":
        await _admit(ws, room, member, str(message.get("who", "")))
        return None
    if kind == "notice":
        await _notice(ws, room, member, str(message.get("who", "")), message.get("text"))
        return None
    if kind == "hangup":
        if member.role == "clinician":
            async with room.lock, records.writing(_as_request(ws), member.actor) as rec:
                await service.end_visit(rec, await _visit(rec, room))
            room.broadcast({"type": "ended", "by": member.name}, admitted_only=False)
            await sfu_relay.ended(sfu_relay.rooms_for(_settings(ws)), room.org_id, room.appointment_id)
            HUB.queue_changed(room.org_id, room.practitioners)
        return "close"
    member.send({"type": "error", "code": "unknown-type", "refused": kind})
    return None


async def _visit(rec: records.Records, room: Room) -> Visit:
    visit = await service.load_visit(rec.on_behalf(), room.appointment_id)
    if visit is None:
        raise VisitError("gone")
    return visit


async def _admit(ws: WebSocket, room: Room, member: Member, who: str) -> None:
    if member.role != "clinician":
        member.send({"type": "error", "code": "not-allowed", "refused": "admit"})
        return
    target = room.members.get(who)
    if target is None or target.role == "staff":
        member.send({"type": "error", "code": "no-such-peer", "refused": "admit"})
        return
    if target.admitted:
        return
    try:
        async with room.lock, records.writing(_as_request(ws), member.actor) as rec:
            visit = await _visit(rec, room)
            if visit.status != "in-progress":
                await service.admit(rec, visit, by=str(member.ref))
            if target.role == "guest":
                await service.add_participant(rec, visit, label=f"Guest: {target.name}")
            elif target.ref and target.ref.startswith("RelatedPerson/"):  # a proxy joins for the patient
                await service.add_participant(rec, visit, label=target.name, individual=target.ref)
    except VisitError as exc:
        member.send({"type": "error", "code": exc.code, "refused": "admit"})
        return
    # A patient's other open sockets (a second tab, a reconnect) are let in together.
    newly = []
    for m in list(room.members.values()):
        if m is target or (target.role == "patient" and m.role == "patient" and m.ref == target.ref):
            newly.append(m)
            m.admitted = True
            m.wake.set()
            m.send({"type": "admitted", "by": member.name})
            room.broadcast({"type": "joined", "peer": {"id": m.id, "role": m.role, "name": m.name}}, but=m)
    room.send_peers()
    room.send_lobby()
    HUB.queue_changed(room.org_id, room.practitioners)
    for m in newly if room.media else []:  # a call grown past what peer to peer carries moves to the SFU
        await sfu_relay.admitted(sfu_relay.rooms_for(_settings(ws)), room, m)


async def _notice(ws: WebSocket, room: Room, member: Member, who: str, text: Any) -> None:
    if member.role not in ("clinician", "staff"):
        member.send({"type": "error", "code": "not-allowed", "refused": "notice"})
        return
    target = room.members.get(who)
    if target is None or not isinstance(text, str) or not text.strip():
        member.send({"type": "error", "code": "no-such-peer", "refused": "notice"})
        return
    async with records.writing(_as_request(ws), member.actor) as rec:
        visit = await _visit(rec, room)
        comm = await service.record_notice(rec, visit, text, sender=member.ref)
    notice = {"type": "notice", "fromName": member.name, "text": comm["payload"][0]["contentString"]}
    for m in room.members.values():
        if m.role in ("patient", "guest"):
            m.send(notice)


def push_notice(org_id: str, appointment_id: str, name: str, text: str) -> None:
    """A note written on the waiting-room page reaches the patient's open sockets at once."""
    room = HUB.find(org_id, appointment_id)
    if room is not None:
        for m in room.members.values():
            if m.role in ("patient", "guest"):
                m.send({"type": "notice", "fromName": name, "text": text})


def push_phone(org_id: str, appointment_id: str, name: str) -> None:
    """The visit moved to the phone: everyone in the room is told (the call ends for them)."""
    room = HUB.find(org_id, appointment_id)
    if room is not None:
        room.broadcast({"type": "phone", "by": name}, admitted_only=False)
        HUB.queue_changed(org_id, room.practitioners)
    sfu_relay.end_soon(org_id, appointment_id)  # the call is over: so is its SFU room


def push_file(org_id: str, appointment_id: str, sender: str | None, name: str, role: str,
              entry: dict[str, Any]) -> None:  # fmt: skip
    """A file shared in the call (stored by ``POST /visits/{id}/files``) is announced as a chat
    entry to the members admitted to the call, never to anyone still waiting."""
    room = HUB.find(org_id, appointment_id)
    if room is None:
        return
    who = next((m.id for m in room.admitted() if sender and m.ref == sender), None)
    room.broadcast({"type": "chat", "from": who, "fromName": name, "fromRole": role, "text": "", **entry})


def checked_in(org_id: str, practitioners: list[str]) -> None:
    """A patient checked in: the clinicians' waiting patients get their new places."""
    HUB.queue_changed(org_id, practitioners)
