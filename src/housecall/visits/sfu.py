"""A selective forwarding unit (SFU) for visits with more people than a peer-to-peer mesh carries.

Two or three people meet peer to peer (decision 0018). Past ``sfu_threshold`` admitted members
every browser would send its camera to every other one; an SFU takes one upstream per person and
forwards it to the others. This module is the visit's side of that: the ``Sfu`` interface the visit
needs, whichever server implements it (``visits/janus.py`` today; LiveKit could be another), and
``SfuRooms``, the server-side life cycle of a visit's SFU room (decision 0022):

- a room is created for a visit, with a secret (to manage it) and a pin (to enter it) that only
  this server knows;
- a **join grant** (a random per-participant token the SFU is told to accept) is minted only for a
  participant the visit's signaling has admitted, and revoked when they leave or are removed;
- our server speaks the SFU's own signaling on the participant's behalf: the browser's SDP offer
  to publish goes in, the SFU's answer comes back; to receive someone, the SFU's offer comes back
  and the browser's answer goes in. The browser never learns the room's secret or pin;
- the room is destroyed when the visit ends, which ends every media path through it.

Media is still DTLS-SRTP from each browser to the SFU; the SFU decrypts to forward it (see
decision 0022 on end-to-end encryption with insertable streams).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from housecall.core.settings import Settings

RoomId = int | str


class SfuError(Exception):
    """Something the SFU refused or could not do; ``code`` is what the visit page is told."""

    code = "sfu-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class SfuUnavailable(SfuError):
    """The SFU cannot be reached or answered nonsense: the visit stays peer to peer or retries."""

    code = "sfu-unavailable"


class SfuRefused(SfuError):
    """The SFU refused the request: no grant, a revoked or wrong token, a wrong pin or secret."""

    code = "sfu-refused"


class SfuNoSuchRoom(SfuError):
    """The room does not exist (never created, or destroyed when the visit ended)."""

    code = "sfu-no-room"


class SfuFull(SfuError):
    """The room holds as many publishers as it was created for."""

    code = "sfu-full"


class NotAdmitted(SfuError):
    """A grant was asked for someone the visit has not admitted: nobody waiting reaches the media."""

    code = "not-admitted"


@dataclass(frozen=True)
class SfuRoom:
    """A visit's room on the SFU. ``secret`` manages it, ``pin`` enters it; both stay on our server."""

    visit: str
    id: RoomId
    secret: str = field(repr=False)
    pin: str = field(repr=False)
    publishers: int


@dataclass(frozen=True)
class JoinGrant:
    """Permission for one admitted participant to enter one room until ``expires`` (unix seconds)."""

    room: RoomId
    participant: str
    token: str = field(repr=False)
    expires: float

    def valid(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires


@dataclass(frozen=True)
class Publication:
    """A participant's upstream: the SFU's id for it (``feed``) and its SDP answer to the offer."""

    participant: str
    feed: RoomId
    answer: str


@dataclass(frozen=True)
class Subscription:
    """One participant receiving one feed: the SFU's SDP offer, to be answered with ``start``."""

    participant: str
    feed: RoomId
    offer: str
    key: str  # the adapter's handle on this subscription


@dataclass(frozen=True)
class SfuParticipant:
    """Someone in the room as the SFU sees them (``display`` is the opaque participant id we gave)."""

    feed: RoomId
    display: str
    publishing: bool


class Sfu(Protocol):
    """What a visit needs from an SFU. Every method raises an ``SfuError`` subclass on failure."""

    async def create_room(self, visit: str, *, publishers: int) -> SfuRoom:
        """A new private room with a fresh secret and pin for ``visit`` (an opaque id)."""
        ...

    async def grant(self, room: SfuRoom, participant: str, *, seconds: int) -> JoinGrant:
        """Let ``participant`` (an opaque id) in. Callers mint grants for admitted people only."""
        ...

    async def revoke(self, room: SfuRoom, grant: JoinGrant) -> None:
        """The grant's token no longer opens the room (already joined media is ended by ``kick``)."""
        ...

    async def publish(self, room: SfuRoom, grant: JoinGrant, offer: str) -> Publication:
        """Join as a publisher with the browser's complete (non-trickle) SDP offer; the answer back."""
        ...

    async def subscribe(self, room: SfuRoom, grant: JoinGrant, feed: RoomId) -> Subscription:
        """Receive ``feed``: the SFU's SDP offer for the browser to answer."""
        ...

    async def start(self, subscription: Subscription, answer: str) -> None:
        """The browser's answer to a subscription's offer: media starts flowing to it."""
        ...

    async def participants(self, room: SfuRoom) -> list[SfuParticipant]:
        """Who is in the room now."""
        ...

    async def kick(self, room: SfuRoom, participant: str) -> None:
        """End ``participant``'s media in the room (their grant should be revoked first)."""
        ...

    async def leave(self, participant: str) -> None:
        """Drop everything the adapter holds for ``participant`` (their publication, subscriptions)."""
        ...

    async def destroy_room(self, room: SfuRoom) -> None:
        """End the room and every media path through it. Destroying a gone room is not an error."""
        ...

    async def close(self) -> None:
        """Release connections to the SFU (the process is stopping)."""
        ...


class Participant(Protocol):
    """A member of a visit's signaling room as the life cycle needs it (``visits/signal.Member``)."""

    id: str
    admitted: bool


class SfuRooms:
    """The life cycle of visits' SFU rooms in this process: create on demand, grant to the
    admitted, relay offers and answers, clean up on leave and at the visit's end.

    Keys are ``(org_id, appointment_id)`` like the signaling hub's rooms. A visit uses the SFU
    once it has more than ``threshold`` admitted members (``wanted``); the room is kept until the
    visit ends even if people leave, so nobody is moved back and forth between mesh and SFU.
    """

    def __init__(self, sfu: Sfu, *, threshold: int = 3, grant_seconds: int = 600, publishers: int = 12):
        self.sfu = sfu
        self.threshold = threshold
        self.grant_seconds = grant_seconds
        self.publishers = publishers
        self.rooms: dict[tuple[str, str], SfuRoom] = {}
        self.grants: dict[tuple[str, str], dict[str, JoinGrant]] = {}
        # Offers the SFU made to a participant, waiting for their answer: (participant, key).
        self.pending: dict[tuple[str, str], Subscription] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def wanted(self, admitted: int) -> bool:
        """Whether a visit with ``admitted`` people in the call should go through the SFU."""
        return admitted > self.threshold

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def room_for(self, org_id: str, appointment_id: str) -> SfuRoom:
        """The visit's room, created the first time it is needed (once, even if asked concurrently)."""
        key = (org_id, appointment_id)
        async with self._lock(key):
            room = self.rooms.get(key)
            if room is None:
                room = await self.sfu.create_room(appointment_id, publishers=self.publishers)
                self.rooms[key] = room
                self.grants[key] = {}
            return room

    async def grant_for(self, org_id: str, appointment_id: str, who: Participant) -> JoinGrant:
        """A valid grant for an admitted member (reused while valid, renewed when it expires).
        Refuses anyone the visit has not admitted: the waiting room holds at the SFU too. A room
        the SFU lost (restarted) is created again, once."""
        if not who.admitted:
            raise NotAdmitted("only admitted participants may enter the visit's media")
        key = (org_id, appointment_id)
        for attempt in (1, 2):
            room = await self.room_for(org_id, appointment_id)
            try:
                async with self._lock(key):
                    return await self._grant(room, key, who)
            except SfuNoSuchRoom:
                if attempt == 2:
                    raise
                async with self._lock(key):
                    if self.rooms.get(key) is room:
                        del self.rooms[key]
                        self.grants.pop(key, None)
        raise AssertionError("unreachable")

    async def _grant(self, room: SfuRoom, key: tuple[str, str], who: Participant) -> JoinGrant:
        grants = self.grants.setdefault(key, {})
        old = grants.get(who.id)
        # Renew a little before the end so an offer in flight does not meet an expired token.
        if old is not None and old.valid(time.time() + 30):
            return old
        if old is not None:
            await self.sfu.revoke(room, old)
        grant = await self.sfu.grant(room, who.id, seconds=self.grant_seconds)
        grants[who.id] = grant
        return grant

    async def publish(self, org_id: str, appointment_id: str, who: Participant, offer: str) -> Publication:
        """Relay an admitted member's offer to publish; the SFU's answer goes back to their page."""
        grant = await self.grant_for(org_id, appointment_id, who)
        return await self.sfu.publish(self._room(org_id, appointment_id), grant, offer)

    async def subscribe(
        self, org_id: str, appointment_id: str, who: Participant, feed: RoomId
    ) -> Subscription:
        """The SFU's offer for an admitted member to receive ``feed``; answer it with ``start``."""
        grant = await self.grant_for(org_id, appointment_id, who)
        return await self.sfu.subscribe(self._room(org_id, appointment_id), grant, feed)

    async def subscribe_to(
        self, org_id: str, appointment_id: str, who: Participant, peer: str
    ) -> Subscription:
        """Like ``subscribe``, naming the publishing member by their participant id; the offer is
        kept until the same member answers it (``start``)."""
        feeds = {p.display: p.feed for p in await self.participants(org_id, appointment_id) if p.publishing}
        if peer == who.id or peer not in feeds:
            raise SfuError("that participant publishes nothing here", code="no-such-peer")
        subscription = await self.subscribe(org_id, appointment_id, who, feeds[peer])
        self.pending[(who.id, subscription.key)] = subscription
        return subscription

    async def start(self, who: Participant, key: str, answer: str) -> None:
        """A member's answer to an offer the SFU made *them* (nobody may answer another's)."""
        if not who.admitted:
            raise NotAdmitted("only admitted participants may enter the visit's media")
        subscription = self.pending.pop((who.id, key), None)
        if subscription is None:
            raise SfuError("no such offer", code="no-such-offer")
        await self.sfu.start(subscription, answer)

    def _room(self, org_id: str, appointment_id: str) -> SfuRoom:
        room = self.rooms.get((org_id, appointment_id))
        if room is None:  # the visit ended while this member's offer was on its way
            raise SfuNoSuchRoom("the visit's room has ended")
        return room

    def active(self, org_id: str, appointment_id: str) -> bool:
        """Whether the visit has gone through the SFU (it stays there until it ends)."""
        return (org_id, appointment_id) in self.rooms

    async def participants(self, org_id: str, appointment_id: str) -> list[SfuParticipant]:
        room = self.rooms.get((org_id, appointment_id))
        return [] if room is None else await self.sfu.participants(room)

    async def remove(self, org_id: str, appointment_id: str, participant: str) -> None:
        """``participant`` left the visit or was removed: revoke their grant, end their media."""
        key = (org_id, appointment_id)
        room = self.rooms.get(key)
        if room is None:
            return
        async with self._lock(key):
            grant = self.grants.get(key, {}).pop(participant, None)
            if grant is not None:
                await self.sfu.revoke(room, grant)
        await self.sfu.kick(room, participant)
        await self.sfu.leave(participant)
        self._forget(participant)

    async def end(self, org_id: str, appointment_id: str) -> None:
        """The visit ended (hang-up, moved to the phone): destroy its room; idempotent."""
        key = (org_id, appointment_id)
        async with self._lock(key):
            room = self.rooms.pop(key, None)
            grants = self.grants.pop(key, {})
            if room is not None:
                await self.sfu.destroy_room(room)
            for participant in grants:
                await self.sfu.leave(participant)
                self._forget(participant)
        self._locks.pop(key, None)

    def _forget(self, participant: str) -> None:
        for pending in [k for k in self.pending if k[0] == participant]:
            del self.pending[pending]


def sfu_from_settings(settings: Settings) -> Sfu | None:
    """The configured SFU (``HOUSECALL_SFU``), or None when visits stay peer to peer."""
    if settings.sfu == "none":
        return None
    if settings.sfu == "janus":
        from housecall.visits.janus import JanusSfu  # only a Janus deployment pays for the import

        return JanusSfu.from_settings(settings)
    raise ValueError(f"unknown HOUSECALL_SFU {settings.sfu!r} (none or janus)")


def rooms_from_settings(settings: Settings) -> SfuRooms | None:
    """The process's SFU room life cycle, or None when no SFU is configured."""
    sfu = sfu_from_settings(settings)
    if sfu is None:
        return None
    return SfuRooms(sfu, threshold=settings.sfu_threshold, grant_seconds=settings.sfu_grant_seconds,
                    publishers=settings.sfu_publishers)  # fmt: skip
