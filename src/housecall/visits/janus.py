"""``Sfu`` on a Janus VideoRoom, spoken over Janus's HTTP API (decision 0022).

Janus's HTTP API: ``POST {url}`` creates a session, ``POST {url}/{session}`` attaches a plugin
handle (or keeps the session alive, or destroys it), ``POST {url}/{session}/{handle}`` sends the
plugin a message, and ``GET {url}/{session}`` long-polls the session's events. A plugin answers a
management request (create, allowed, kick, destroy, listparticipants) at once; a request that
involves media (join, publish, start) is acknowledged and answered later as an event carrying the
same transaction.

- One **control session** manages rooms (create with a secret and pin, the ``allowed`` token list,
  kick, destroy, list). Each **participant** gets a session of their own, with one handle that
  publishes and one handle per feed they receive, so leaving is destroying that one session.
- Every session is kept alive (a keepalive every ``janus_keepalive_seconds``) and long-polled by a
  task of its own; both stop when the session is closed.
- Janus's errors become the ``SfuError`` subclasses the visit understands: a wrong API secret, an
  unknown or revoked token and a wrong pin are ``SfuRefused``; an unknown room ``SfuNoSuchRoom``; a
  full room ``SfuFull``; no answer ``SfuUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from housecall.core.settings import Settings
from housecall.visits.sfu import (
    JoinGrant,
    Publication,
    RoomId,
    SfuError,
    SfuFull,
    SfuNoSuchRoom,
    SfuParticipant,
    SfuRefused,
    SfuRoom,
    SfuUnavailable,
    Subscription,
)

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"

# Janus core error codes (janus/apierror.h) and VideoRoom plugin error codes (janus_videoroom.c).
CORE_UNAUTHORIZED = (403, 405)  # missing/wrong api secret or token; plugin not allowed
CORE_GONE = (458, 459)  # no such session / handle (timed out, destroyed)
ROOM_NO_SUCH_ROOM = 426
ROOM_NO_SUCH_FEED = 428
ROOM_PUBLISHERS_FULL = 432
ROOM_UNAUTHORIZED = 433


def error_for(code: int, reason: str) -> SfuError:
    """The visit's exception for a Janus (core or VideoRoom) error code."""
    message = f"Janus {code}: {reason}"
    if code in CORE_UNAUTHORIZED or code == ROOM_UNAUTHORIZED:
        return SfuRefused(message)
    if code == ROOM_NO_SUCH_ROOM:
        return SfuNoSuchRoom(message)
    if code == ROOM_PUBLISHERS_FULL:
        return SfuFull(message)
    if code in CORE_GONE:
        return SfuUnavailable(message)
    if code == ROOM_NO_SUCH_FEED:
        return SfuError(message, code="sfu-no-feed")
    return SfuError(message)


@dataclass(frozen=True)
class Event:
    """An asynchronous answer of a plugin: its data and the JSEP (SDP) it carried, if any."""

    data: dict[str, Any]
    jsep: dict[str, Any] | None


class JanusSession:
    """One Janus session over HTTP: requests, a long-poll task routing events to the transactions
    that wait for them, and a keepalive task."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, api_secret: str, timeout: float,
                 keepalive: float) -> None:  # fmt: skip
        self.client = client
        self.url = url.rstrip("/")
        self.api_secret = api_secret
        self.timeout = timeout
        self.keepalive_every = keepalive
        self.id: int | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # Kinds of event Janus sent without a transaction (webrtcup, hangup, media…), per handle.
        self.notices: dict[int, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or secrets.token_hex(8)}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        try:
            response = await self.client.post(
                self.url + path, content=orjson.dumps(body), timeout=self.timeout
            )
            reply = orjson.loads(response.content)
        except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
            raise SfuUnavailable(f"Janus at {self.url} did not answer: {exc!r}") from exc
        if not isinstance(reply, dict):
            raise SfuUnavailable("Janus answered something that is not a JSON object")
        if reply.get("janus") == "error":
            err = reply.get("error") or {}
            code = int(err.get("code", 0))
            if code == CORE_GONE[0] and path:
                self.closed = True  # Janus forgot this session (timed out, restarted): reopen one
            raise error_for(code, str(err.get("reason", "")))
        return reply

    async def open(self) -> JanusSession:
        reply = await self._post("", {"janus": "create"})
        self.id = int(reply["data"]["id"])
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._keepalive())]
        return self

    async def attach(self, plugin: str = VIDEOROOM) -> int:
        reply = await self._post(f"/{self.id}", {"janus": "attach", "plugin": plugin})
        handle = int(reply["data"]["id"])
        self.notices[handle] = set()
        return handle

    async def detach(self, handle: int) -> None:
        with contextlib.suppress(SfuError):
            await self._post(f"/{self.id}/{handle}", {"janus": "detach"})
        self.notices.pop(handle, None)

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A plugin request answered at once (``success``); returns the plugin's data."""
        reply = await self._post(f"/{self.id}/{handle}", {"janus": "message", "body": body})
        if reply.get("janus") != "success":
            raise SfuError(f"Janus answered {reply.get('janus')!r} to {body.get('request')!r}")
        return _plugin_data(reply)

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> Event:
        """A plugin request answered later, as an event with our transaction (join, publish, start)."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[transaction] = future
        request: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            reply = await self._post(f"/{self.id}/{handle}", request)
            if reply.get("janus") == "success":  # some requests are answered at once after all
                return Event(_plugin_data(reply), reply.get("jsep"))
            try:
                event = await asyncio.wait_for(future, self.timeout)
            except TimeoutError as exc:
                raise SfuUnavailable(f"Janus did not answer {body.get('request')!r} in time") from exc
        finally:
            self.waiting.pop(transaction, None)
        if event.get("janus") == "error":
            err = event.get("error") or {}
            raise error_for(int(err.get("code", 0)), str(err.get("reason", "")))
        return Event(_plugin_data(event), event.get("jsep"))

    async def _poll(self) -> None:
        """Long-poll the session's events; route each to the transaction waiting for it."""
        params = {"maxev": "10"}
        if self.api_secret:
            params["apisecret"] = self.api_secret
        while not self.closed:
            try:
                response = await self.client.get(
                    f"{self.url}/{self.id}", params=params, timeout=self.timeout + 35
                )
                events = orjson.loads(response.content)
            except (httpx.HTTPError, orjson.JSONDecodeError):
                if self.closed:
                    return
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                self._route(event)

    def _route(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "keepalive":
            return
        if kind == "error" and (event.get("error") or {}).get("code") in CORE_GONE:
            self.closed = True  # the session timed out or was destroyed: nothing more will come
        future = self.waiting.get(str(event.get("transaction", "")))
        if future is not None and not future.done() and kind in ("event", "error"):
            future.set_result(event)
            return
        sender = event.get("sender")
        if isinstance(sender, int) and sender in self.notices and isinstance(kind, str):
            self.notices[sender].add(kind)

    async def _keepalive(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.keepalive_every)
            try:
                await self._post(f"/{self.id}", {"janus": "keepalive"})
            except SfuError:
                log.warning("Janus session %s lost its keepalive", self.id)

    def saw(self, handle: int, kind: str) -> bool:
        """Whether Janus reported ``kind`` (``webrtcup``, ``hangup``, …) for ``handle``."""
        return kind in self.notices.get(handle, set())

    async def close(self) -> None:
        if self.id is None or self.closed:
            self.closed = True
        else:
            self.closed = True
            with contextlib.suppress(SfuError):
                await self._post(f"/{self.id}", {"janus": "destroy"})
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _plugin_data(reply: dict[str, Any]) -> dict[str, Any]:
    """The plugin's answer, or the VideoRoom's error as an exception."""
    data = (reply.get("plugindata") or {}).get("data")
    if not isinstance(data, dict):
        raise SfuUnavailable("Janus answered without plugin data")
    if "error_code" in data:
        raise error_for(int(data["error_code"]), str(data.get("error", "")))
    return data


@dataclass
class _Person:
    """What the adapter holds for one participant: their own session, publisher and subscribers."""

    session: JanusSession
    room: RoomId
    publisher: int | None = None  # the handle that joined with the grant's token
    feed: RoomId | None = None  # the room's id for this participant
    private_id: int | None = None  # what ties their subscriptions to their (token-checked) join
    published: bool = False
    subscribers: dict[str, int] = field(default_factory=dict)


class JanusSfu:
    """``Sfu`` on a Janus VideoRoom (see the module's docstring)."""

    def __init__(self, url: str, *, api_secret: str = "", admin_key: str = "", timeout: float = 10.0,
                 keepalive: float = 25.0) -> None:  # fmt: skip
        self.url = url
        self.api_secret = api_secret
        self.admin_key = admin_key
        self.timeout = timeout
        self.keepalive = keepalive
        # Long polls hold a connection each: one per participant plus the control session.
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20)
        )
        self._control: tuple[JanusSession, int] | None = None
        self._control_lock = asyncio.Lock()
        self.people: dict[str, _Person] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> JanusSfu:
        return cls(settings.janus_url, api_secret=settings.janus_api_secret, admin_key=settings.janus_admin_key,
                   timeout=settings.janus_timeout_seconds, keepalive=settings.janus_keepalive_seconds)  # fmt: skip

    def _session(self) -> JanusSession:
        return JanusSession(self.client, self.url, api_secret=self.api_secret, timeout=self.timeout,
                            keepalive=self.keepalive)  # fmt: skip

    async def _control_handle(self) -> tuple[JanusSession, int]:
        """The control session's VideoRoom handle, reopened if Janus dropped it (a restart)."""
        async with self._control_lock:
            if self._control is None or self._control[0].closed:
                if self._control is not None:
                    await self._control[0].close()  # stop its poll and keepalive tasks
                session = await self._session().open()
                self._control = (session, await session.attach())
            return self._control

    async def _manage(self, body: dict[str, Any]) -> dict[str, Any]:
        session, handle = await self._control_handle()
        try:
            return await session.request(handle, body)
        except SfuUnavailable:
            if not session.closed:
                raise
            session, handle = await self._control_handle()  # the session expired: once more
            return await session.request(handle, body)

    # -- rooms ------------------------------------------------------------------------------------

    async def create_room(self, visit: str, *, publishers: int) -> SfuRoom:
        secret, pin = secrets.token_urlsafe(24), secrets.token_urlsafe(12)
        body: dict[str, Any] = {
            "request": "create",
            # No health information and no names on the SFU: the description is generic.
            "description": "Housecall visit",
            "is_private": True,  # not listed to anyone who asks Janus for its rooms
            "permanent": False,
            "secret": secret,
            "pin": pin,
            "allowed": [],  # an access list from the start: only granted tokens may join
            "require_pvtid": True,  # subscribers must hold a private id from a token-checked join
            "publishers": publishers,
            "audiocodec": "opus",
            "videocodec": "vp8,h264",
            "notify_joining": True,
        }
        if self.admin_key:
            body["admin_key"] = self.admin_key
        data = await self._manage(body)
        return SfuRoom(visit=visit, id=data["room"], secret=secret, pin=pin, publishers=publishers)

    async def destroy_room(self, room: SfuRoom) -> None:
        with contextlib.suppress(SfuNoSuchRoom):
            await self._manage({"request": "destroy", "room": room.id, "secret": room.secret})
        for participant in [p for p, person in self.people.items() if person.room == room.id]:
            await self.leave(participant)

    async def grant(self, room: SfuRoom, participant: str, *, seconds: int) -> JoinGrant:
        token = secrets.token_urlsafe(24)
        await self._manage({"request": "allowed", "room": room.id, "secret": room.secret, "action": "add",
                            "allowed": [token]})  # fmt: skip
        return JoinGrant(room=room.id, participant=participant, token=token, expires=time.time() + seconds)

    async def revoke(self, room: SfuRoom, grant: JoinGrant) -> None:
        with contextlib.suppress(SfuNoSuchRoom):
            await self._manage({"request": "allowed", "room": room.id, "secret": room.secret,
                                "action": "remove", "allowed": [grant.token]})  # fmt: skip

    async def participants(self, room: SfuRoom) -> list[SfuParticipant]:
        data = await self._manage({"request": "listparticipants", "room": room.id})
        return [SfuParticipant(feed=p["id"], display=str(p.get("display", "")), publishing=bool(p.get("publisher")))
                for p in data.get("participants", [])]  # fmt: skip

    async def kick(self, room: SfuRoom, participant: str) -> None:
        person = self.people.get(participant)
        if person is None or person.feed is None:
            return
        with contextlib.suppress(SfuNoSuchRoom):
            try:
                await self._manage(
                    {"request": "kick", "room": room.id, "secret": room.secret, "id": person.feed}
                )
            except SfuError as exc:
                if exc.code != "sfu-no-feed":  # already gone is what we wanted
                    raise

    # -- a participant's media ----------------------------------------------------------------------

    def _checked(self, room: SfuRoom, grant: JoinGrant) -> None:
        # Janus does not expire tokens; we do, before asking it anything.
        if grant.room != room.id:
            raise SfuRefused("this grant is for another room")
        if not grant.valid():
            raise SfuRefused("this grant has expired")

    async def _person(self, room: SfuRoom, participant: str) -> _Person:
        person = self.people.get(participant)
        if person is None or person.session.closed:
            if person is not None:
                await person.session.close()
            person = _Person(await self._session().open(), room.id)
            self.people[participant] = person
        return person

    async def _joined(self, room: SfuRoom, grant: JoinGrant) -> _Person:
        """The participant in the room as a publisher (with or without media yet): the join Janus
        checks against the room's pin and ``allowed`` tokens. Their subscriptions carry the join's
        ``private_id``, which the room requires (``require_pvtid``): Janus checks no token when a
        subscriber joins, so no grant, no join, no private id, no media."""
        self._checked(room, grant)
        person = await self._person(room, grant.participant)
        if person.publisher is not None:
            return person
        handle = await person.session.attach()
        try:
            joined = await person.session.message(handle, {
                "request": "join", "ptype": "publisher", "room": room.id, "pin": room.pin,
                "token": grant.token, "display": grant.participant,
            })  # fmt: skip
        except BaseException:
            await person.session.detach(handle)
            raise
        person.publisher, person.feed, person.private_id = (
            handle,
            joined.data["id"],
            joined.data.get("private_id"),
        )
        return person

    async def publish(self, room: SfuRoom, grant: JoinGrant, offer: str) -> Publication:
        person = self.people.get(grant.participant)
        if person is not None and person.published and person.publisher is not None:
            # Publishing again (a reconnect, a new camera): the old upstream and its join go.
            await person.session.detach(person.publisher)
            person.publisher = person.feed = person.private_id = None
            person.published = False
        person = await self._joined(room, grant)
        assert person.publisher is not None
        configured = await person.session.message(
            person.publisher, {"request": "publish", "audio": True, "video": True},
            {"type": "offer", "sdp": offer, "trickle": False},
        )  # fmt: skip
        if configured.jsep is None or configured.jsep.get("type") != "answer" or person.feed is None:
            raise SfuError("Janus accepted the offer without an answer")
        person.published = True
        return Publication(participant=grant.participant, feed=person.feed, answer=configured.jsep["sdp"])

    async def subscribe(self, room: SfuRoom, grant: JoinGrant, feed: RoomId) -> Subscription:
        person = await self._joined(room, grant)
        handle = await person.session.attach()
        try:
            attached = await person.session.message(handle, {
                "request": "join", "ptype": "subscriber", "room": room.id, "pin": room.pin,
                "private_id": person.private_id, "streams": [{"feed": feed}],
            })  # fmt: skip
        except BaseException:
            await person.session.detach(handle)
            raise
        if attached.jsep is None or attached.jsep.get("type") != "offer":
            await person.session.detach(handle)
            raise SfuError("Janus attached the subscriber without an offer")
        key = secrets.token_hex(8)
        person.subscribers[key] = handle
        return Subscription(participant=grant.participant, feed=feed, offer=attached.jsep["sdp"], key=key)

    async def start(self, subscription: Subscription, answer: str) -> None:
        person = self.people.get(subscription.participant)
        handle = None if person is None else person.subscribers.get(subscription.key)
        if person is None or handle is None:
            raise SfuRefused("no such subscription (the participant left or was removed)")
        await person.session.message(handle, {"request": "start"}, {"type": "answer", "sdp": answer})

    def media_up(self, participant: str) -> bool:
        """Whether Janus reported the participant's upstream connected (``webrtcup``)."""
        person = self.people.get(participant)
        return bool(
            person and person.publisher is not None and person.session.saw(person.publisher, "webrtcup")
        )

    async def leave(self, participant: str) -> None:
        person = self.people.pop(participant, None)
        if person is not None:
            await person.session.close()  # destroying the session leaves the room, ends its media

    async def close(self) -> None:
        for participant in list(self.people):
            await self.leave(participant)
        if self._control is not None:
            await self._control[0].close()
            self._control = None
        await self.client.aclose()
