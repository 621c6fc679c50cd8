"""Secure messages as FHIR Communications: threads, replies, read state, routing to a pool.

How a conversation is written down (docs/decisions/0012), so that the same facts show on the API:

- every message is one ``Communication`` (``status`` completed, ``sent`` when it was sent), tagged
  ``category`` ``urn:housecall:communication|secure-message`` so other Communications (letters,
  reminders) are not mistaken for conversations; ``subject`` is the patient;
- a **thread** is its first message: ``topic.text`` is the thread's subject line, and every later
  message names the first in ``partOf`` (and the message it answers in ``inResponseTo``), so the
  thread is one search (``part-of=Communication/<first>``) and its id is the first message's id;
- **routing**: a message from the patient's side (``sender`` Patient or RelatedPerson — a proxy) is
  addressed to the pool the patient chose (``recipient`` HealthcareService/<pool>) and opens a
  Task of kind "message" in that pool's inbox (``workspace/inbox``), one per thread while open; a
  message from the care team (``sender`` Practitioner) is addressed to the patient and completes
  the thread's open Task; the pool of a thread is the first message's recipient;
- **read state**: each reader who opened a message from the other side is listed in an extension
  ``urn:housecall:read-by`` (``reader`` reference, ``at`` dateTime) — per reader, so a proxy's
  reading does not hide a message from the patient — and ``Communication.received`` is the first
  time anyone on the receiving side read it;
- **attachments** are Binary resources named by ``payload.contentAttachment.url`` (``attachments.py``);
- **expected response time** per pool: ``HealthcareService.characteristic`` coded
  ``urn:housecall:response-business-days|<n>``; two business days when a pool does not say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from housecall import notify
from housecall.fhir import interactions as ix
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.messaging.attachments import File, decode, safe_name, sniff
from housecall.web.i18n import _, ngettext
from housecall.web.records import Records
from housecall.workspace import inbox

CATEGORY_SYSTEM = "urn:housecall:communication"
CATEGORY_CODE = "secure-message"
CATEGORY = f"{CATEGORY_SYSTEM}|{CATEGORY_CODE}"
READ_BY = "urn:housecall:read-by"
RESPONSE_SYSTEM = "urn:housecall:response-business-days"
DEFAULT_RESPONSE_DAYS = 2
MAX_TOPIC = 120
MAX_TEXT = 5000
MAX_MESSAGES = 1000  # one page of search: a patient's whole correspondence (a documented limit)
PATIENT_SIDE = ("Patient/", "RelatedPerson/")


def now_iso() -> str:
    """Now as a FHIR dateTime with milliseconds (messages sent in the same second keep their order)."""
    when = datetime.fromtimestamp(clock.now_us() / 1e6, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def patient_side(reference: str) -> bool:
    return reference.startswith(PATIENT_SIDE)


@dataclass(frozen=True)
class Message:
    id: str
    version: int
    sent: str
    sender: str  # "Patient/…", "RelatedPerson/…", "Practitioner/…"
    sender_name: str
    text: str
    attachment: dict[str, Any] | None
    read_by: dict[str, str]  # reader reference -> when they first read it
    received: str | None

    @property
    def from_patient_side(self) -> bool:
        return patient_side(self.sender)

    def unread_for(self, reader: str) -> bool:
        """Whether ``reader`` (a reference) has a message from the other side still to read."""
        return bool(reader) and self.from_patient_side != patient_side(reader) and reader not in self.read_by


@dataclass
class Thread:
    id: str  # the first message's id
    topic: str
    patient_id: str
    pool: str | None  # HealthcareService id
    messages: list[Message] = field(default_factory=list)

    @property
    def last(self) -> Message:
        return self.messages[-1]

    @property
    def focus(self) -> str:
        """What the thread's inbox Task is about."""
        return f"Communication/{self.id}"

    def unread_for(self, reader: str) -> int:
        return sum(1 for m in self.messages if m.unread_for(reader))

    @property
    def awaiting_reply(self) -> bool:
        return self.last.from_patient_side


# -- reading -----------------------------------------------------------------------------------------


def is_message(resource: dict[str, Any]) -> bool:
    for concept in resource.get("category") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == CATEGORY_SYSTEM and coding.get("code") == CATEGORY_CODE:
                return True
    return False


def _ref(value: Any) -> str:
    return str((value or {}).get("reference") or "") if isinstance(value, dict) else ""


def thread_of(resource: dict[str, Any]) -> str:
    """The id of the thread a message belongs to."""
    for part in resource.get("partOf") or []:
        ref = _ref(part)
        if ref.startswith("Communication/"):
            return ref.removeprefix("Communication/")
    return str(resource["id"])


def _read_by(resource: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ext in resource.get("extension") or []:
        if ext.get("url") != READ_BY:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or []}
        reader = _ref((parts.get("reader") or {}).get("valueReference"))
        if reader:
            out.setdefault(reader, str((parts.get("at") or {}).get("valueDateTime", "")))
    return out


def _message(resource: dict[str, Any], names: dict[str, str]) -> Message:
    text, attachment = "", None
    for item in resource.get("payload") or []:
        if "contentString" in item and not text:
            text = str(item["contentString"])
        elif isinstance(item.get("contentAttachment"), dict) and attachment is None:
            attachment = item["contentAttachment"]
    sender = _ref(resource.get("sender"))
    return Message(
        id=resource["id"],
        version=int(resource["meta"]["versionId"]),
        sent=str(resource.get("sent", "")),
        sender=sender,
        sender_name=names.get(sender, ""),
        text=text,
        attachment=attachment,
        read_by=_read_by(resource),
        received=resource.get("received"),
    )


def _thread(root: dict[str, Any], replies: list[dict[str, Any]], names: dict[str, str]) -> Thread:
    recipients = [_ref(r) for r in root.get("recipient") or []]
    pool = next(
        (r.removeprefix("HealthcareService/") for r in recipients if r.startswith("HealthcareService/")), None
    )
    thread = Thread(
        id=root["id"],
        topic=str((root.get("topic") or {}).get("text") or ""),
        patient_id=_ref(root.get("subject")).removeprefix("Patient/"),
        pool=pool,
    )
    ordered = sorted(replies, key=lambda r: (str(r.get("sent", "")), str(r["meta"].get("lastUpdated", ""))))
    thread.messages = [_message(root, names)] + [_message(r, names) for r in ordered]
    return thread


async def _names(rec: Records, refs: set[str], included: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Display names of the senders (from ``_include`` hits, else read)."""
    out: dict[str, str] = {}
    for ref in sorted(refs):
        resource = included.get(ref)
        if resource is None and "/" in ref:
            res_type, res_id = ref.split("/", 1)
            resource = await rec.read(res_type, res_id)
        out[ref] = inbox.person_name(resource) or _("Someone")
    return out


async def threads_of(rec: Records, patient_id: str) -> list[Thread]:
    """The patient's conversations the actor may see, the most recently active first."""
    page = await rec.search("Communication", [
        ("subject", f"Patient/{patient_id}"), ("category", CATEGORY), ("_sort", "sent"),
        ("_count", str(MAX_MESSAGES)), ("_include", "Communication:sender"),
    ])  # fmt: skip
    names = await _names(rec, {_ref(c.get("sender")) for c in page.resources} - {""}, page.included)
    roots: dict[str, dict[str, Any]] = {}
    replies: dict[str, list[dict[str, Any]]] = {}
    for c in page.resources:
        tid = thread_of(c)
        if tid == c["id"]:
            roots[tid] = c
        else:
            replies.setdefault(tid, []).append(c)
    threads = [_thread(root, replies.get(tid, []), names) for tid, root in roots.items()]
    threads.sort(key=lambda t: t.last.sent, reverse=True)
    return threads


async def load_thread(rec: Records, thread_id: str) -> Thread | None:
    """One conversation, or None when it is unknown or not the actor's to see (the same answer)."""
    if not thread_id or len(thread_id) > 64 or not set(thread_id) <= ix.ID_CHARS:
        return None
    root = await rec.read("Communication", thread_id)
    if root is None or not is_message(root) or thread_of(root) != root["id"]:
        return None
    page = await rec.search("Communication", [
        ("part-of", f"Communication/{thread_id}"), ("_sort", "sent"), ("_count", str(MAX_MESSAGES)),
        ("_include", "Communication:sender"),
    ])  # fmt: skip
    refs = {_ref(c.get("sender")) for c in [root, *page.resources]} - {""}
    names = await _names(rec, refs, page.included)
    # Only messages in the same patient's record belong to the thread (a Communication written on
    # the API could name any thread in partOf).
    same = [
        c for c in page.resources if is_message(c) and _ref(c.get("subject")) == _ref(root.get("subject"))
    ]
    return _thread(root, same, names)


async def unread_count(rec: Records, patient_id: str, reader: str) -> int:
    """Messages to the patient that ``reader`` (the patient or a proxy) has not opened yet."""
    page = await rec.search("Communication", [
        ("recipient", f"Patient/{patient_id}"), ("category", CATEGORY), ("_count", str(MAX_MESSAGES)),
    ])  # fmt: skip
    return sum(1 for c in page.resources if _message(c, {}).unread_for(reader))


# -- pools and their promised response time -----------------------------------------------------------


def response_days(service: dict[str, Any] | None) -> int:
    for concept in (service or {}).get("characteristic") or []:
        for coding in concept.get("coding") or []:
            code = str(coding.get("code", ""))
            if coding.get("system") == RESPONSE_SYSTEM and code.isdigit() and 0 < int(code) < 60:
                return int(code)
    return DEFAULT_RESPONSE_DAYS


def response_text(days: int) -> str:
    return ngettext("Expected reply: within %(n)s business day", "Expected reply: within %(n)s business days",
                    days) % {"n": days}  # fmt: skip


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    days: int

    @property
    def response(self) -> str:
        return response_text(self.days)


async def pools(rec: Records) -> list[Pool]:
    """The organization's active HealthcareServices a patient can write to."""
    page = await rec.search("HealthcareService", [("active", "true"), ("_count", "100"), ("_sort", "name")])
    return [Pool(s["id"], s.get("name", s["id"]), response_days(s)) for s in page.resources]


async def pool_of(rec: Records, pool_id: str | None) -> Pool | None:
    if not pool_id:
        return None
    service = await rec.read("HealthcareService", pool_id)
    if service is None:
        return None
    return Pool(service["id"], service.get("name", service["id"]), response_days(service))


# -- writing ----------------------------------------------------------------------------------------


def _communication(thread: Thread | None, *, patient_id: str, sender: str, recipient: str, topic: str,
                   text: str, attachment: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    payload: list[dict[str, Any]] = []
    if text:
        payload.append({"contentString": text})
    if attachment:
        payload.append({"contentAttachment": attachment})
    comm: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [
            {"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORY_CODE, "display": "Secure message"}]}
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "topic": {"text": topic},
        "sent": now_iso(),
        "sender": {"reference": sender},
        "recipient": [{"reference": recipient}],
        "payload": payload,
    }
    if thread is not None:
        comm["partOf"] = [{"reference": thread.focus}]
        comm["inResponseTo"] = [{"reference": f"Communication/{thread.last.id}"}]
    return comm


async def _store_file(rec: Records, patient_id: str, file: File | None) -> dict[str, Any] | None:
    if file is None:
        return None
    binary = await rec.on_behalf(patient_id).create("Binary", file.binary(patient_id))
    return file.attachment(binary["id"])


async def _open_work(rec: Records, thread: Thread, sender: str) -> None:
    """The thread's inbox Task in its pool, unless one is open already."""
    system = rec.on_behalf(thread.patient_id)
    if await inbox.tasks_for(system, thread.focus):
        return
    await inbox.open_task(system, "message", patient_id=thread.patient_id, focus=thread.focus, pool=thread.pool,
                          description=thread.topic, requester=sender)  # fmt: skip


async def start_thread(rec: Records, *, patient_id: str, sender: str, pool: str, topic: str, text: str,
                       file: File | None) -> Thread:  # fmt: skip
    """A new conversation from the patient's side, addressed to ``pool``; opens the inbox Task."""
    attachment = await _store_file(rec, patient_id, file)
    root = await rec.create("Communication", _communication(
        None, patient_id=patient_id, sender=sender, recipient=f"HealthcareService/{pool}", topic=topic, text=text,
        attachment=attachment,
    ))  # fmt: skip
    thread = _thread(root, [], {})
    await _open_work(rec, thread, sender)
    return thread


async def reply(rec: Records, thread: Thread, *, sender: str, text: str, file: File | None) -> dict[str, Any]:
    """Add a message to ``thread``. From the patient's side it goes to the thread's pool (and opens
    its Task again if it was done); from the care team it goes to the patient and completes the
    thread's open Task."""
    from_patient = patient_side(sender)
    recipient = (
        f"HealthcareService/{thread.pool}" if from_patient and thread.pool else f"Patient/{thread.patient_id}"
    )
    attachment = await _store_file(rec, thread.patient_id, file)
    created = await rec.create("Communication", _communication(
        thread, patient_id=thread.patient_id, sender=sender, recipient=recipient, topic=thread.topic, text=text,
        attachment=attachment,
    ))  # fmt: skip
    if from_patient:
        await _open_work(rec, thread, sender)
    else:
        await inbox.complete_work_on(rec, thread.focus, sender)
        await notify.tell_patient(rec.conn, rec.actor.org_id, thread.patient_id, notify.Kind.NEW_MESSAGE,
                                  portal_link(thread.id))  # fmt: skip
    return created


def portal_link(thread_id: str) -> str:
    return f"/portal/messages/{thread_id}"


def workspace_link(thread_id: str) -> str:
    return f"/workspace/messages/{thread_id}"


async def mark_read(rec: Records, thread: Thread, reader: str) -> int:
    """Note that ``reader`` has read the thread's messages from the other side; returns how many
    were new to them. A message someone else changed meanwhile is read again and marked once."""
    marked = 0
    for message in thread.messages:
        if not message.unread_for(reader):
            continue
        for _attempt in range(3):
            found = await rec.read_versioned("Communication", message.id)
            if found is None:
                break
            resource, version = found
            if reader in _read_by(resource):
                break
            at = now_iso()
            resource.setdefault("extension", []).append({"url": READ_BY, "extension": [
                {"url": "reader", "valueReference": {"reference": reader}}, {"url": "at", "valueDateTime": at},
            ]})  # fmt: skip
            resource.setdefault("received", at)
            try:
                await rec.update(resource, version=version)
            except FhirError as exc:
                if exc.status == 412:
                    continue
                raise
            marked += 1
            break
    return marked


async def complete(rec: Records, thread: Thread, me: str) -> int:
    """The care team has dealt with the thread without a reply: its open Task is completed."""
    return await inbox.complete_work_on(rec, thread.focus, me)


async def open_work(rec: Records, thread: Thread) -> list[dict[str, Any]]:
    return await inbox.tasks_for(rec, thread.focus)


async def binary_of(rec: Records, thread: Thread, message_id: str) -> tuple[bytes, str, str] | None:
    """The attachment of one of the thread's messages: (bytes, content type, file name), or None.
    The caller has loaded ``thread`` as the person (so their access to it was checked); the Binary
    is read as the system, since people never reach Binary on the API."""
    message = next((m for m in thread.messages if m.id == message_id), None)
    if message is None or message.attachment is None:
        return None
    url = str(message.attachment.get("url", ""))
    if not url.startswith("Binary/"):
        return None
    binary = await rec.on_behalf(thread.patient_id).read("Binary", url.removeprefix("Binary/"))
    # The message is writable by the patient on the API: its url could name somebody else's file.
    # Only a Binary kept for this patient's record is served, with the type its bytes prove.
    if binary is None or _ref(binary.get("securityContext")) != f"Patient/{thread.patient_id}":
        return None
    data = decode(binary)
    content_type = sniff(data)
    if content_type is None:
        return None
    return data, content_type, safe_name(str(message.attachment.get("title") or ""), content_type)
