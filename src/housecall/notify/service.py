"""Notifications: features call ``send`` inside their unit of work; a durable job delivers.

``send(conn, org_id, account_id, kind, link)`` queues job ``notify.deliver`` in the caller's
transaction (core/jobs), so nothing goes out for a request that rolled back, and nothing queued is
lost on a restart. The job reads the account's choices (channels, language) when it runs, writes
one ``notification`` row per channel, and delivers each:

- SMS and web push (the local outbox) are written in the transaction that marks the row sent:
  exactly once, however often the job runs.
- E-mail is claimed first (``sending``, committed), then handed to the SMTP server, then recorded
  ``sent``. A re-run that finds a row still ``sending`` after ``CLAIM_SECONDS`` sends it again:
  at least once, with the same Message-ID (docs/decisions/0011 says why not at most once).

Failures are retried with the job's backoff; a row that runs out of attempts, or an address the mail
server refuses for good, ends ``failed``, visible to staff on ``/admin/outbox``. Logs carry ids,
channels and exception types, never addresses or texts.
"""

from __future__ import annotations

import logging
import re
import secrets
import smtplib
from dataclasses import dataclass
from typing import Any

from housecall.core import jobs
from housecall.core.db import Conn, Database
from housecall.core.settings import Settings
from housecall.identity.clock import clock
from housecall.identity.service import accounts_for_patient
from housecall.notify import texts
from housecall.notify.channels import CHANNELS, EMAIL, PUSH, SMS, Channel, Message, channels_for, mask
from housecall.notify.texts import Kind, Language

log = logging.getLogger(__name__)

DELIVER = "notify.deliver"
# 2 s, 4 s … 2048 s between attempts: a mail server away for about an hour is waited for.
MAX_ATTEMPTS = 12
# A delivery claimed longer ago than this lost its worker (an SMTP exchange gives up after 10 s of
# silence per step). Shorter than the job lease, so the job's re-run finds the claim stale.
CLAIM_SECONDS = 120
QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
STATUSES = (QUEUED, SENDING, SENT, FAILED)
MAX_KEY = 190
SETTINGS_PAGE = "/account/notifications"  # where every e-mail says the choices are changed


# --------------------------------------------------------------------------------------------------
# Sending


async def send(
    conn: Conn,
    org_id: str,
    account_id: str,
    kind: Kind | str,
    link: str,
    *,
    key: str | None = None,
    run_at: int | None = None,
) -> str | None:
    """Tell an account that something in Housecall is waiting for them, by the channels they chose.

    Call it inside the unit of work that made the news: it is delivered only if that transaction
    commits. ``kind`` is one of ``Kind`` (the text is fixed per kind: pass no content); ``link`` is
    the local path of the page that shows the news (``/messages/<id>``); ``key`` makes the call
    idempotent (a second call with the same key is a no-op: "reminder:<appointment>:24h");
    ``run_at`` (µs since the epoch) schedules it. Returns the notification's id, or None when the
    key was used already. Raises ValueError for an unknown kind, a link that is not a local path,
    or an account outside ``org_id``.
    """
    kind = Kind(kind)
    texts.check_link(link)
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise ValueError(f"a notification key has 1 to {MAX_KEY} characters")
    if not await conn.fetchval("SELECT 1 FROM account WHERE id = $1 AND org_id = $2", account_id, org_id):
        raise ValueError("no such account in this organization")
    notification_id = secrets.token_hex(16)
    args = {"notification": notification_id, "org": org_id, "account": account_id, "kind": kind.value,
            "link": link, "key": key}  # fmt: skip
    job = await jobs.enqueue(
        conn, DELIVER, args, run_at=run_at, key=f"notify:{key}" if key else None, max_attempts=MAX_ATTEMPTS
    )
    return notification_id if job is not None else None


# --------------------------------------------------------------------------------------------------
# Preferences


@dataclass(frozen=True)
class Preferences:
    email: bool = True
    sms: bool = False
    push: bool = False
    phone: str | None = None  # E.164
    language: Language = Language.EN

    def channels(self) -> list[str]:
        on = {EMAIL: self.email, SMS: self.sms and self.phone is not None, PUSH: self.push}
        return [c for c in CHANNELS if on[c]]


async def get_preferences(conn: Conn, account_id: str) -> Preferences:
    row = await conn.fetchrow(
        "SELECT email, sms, push, phone, language FROM notification_preference WHERE account_id = $1",
        account_id,
    )
    if row is None:
        return Preferences()
    language = row[4] if row[4] in tuple(Language) else Language.EN
    return Preferences(bool(row[0]), bool(row[1]), bool(row[2]), row[3], Language(language))


async def save_preferences(conn: Conn, account_id: str, prefs: Preferences) -> None:
    await conn.execute(
        "INSERT INTO notification_preference (account_id, email, sms, push, phone, language, updated) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id) DO UPDATE SET email = excluded.email, "
        "sms = excluded.sms, push = excluded.push, phone = excluded.phone, language = excluded.language, "
        "updated = excluded.updated",
        account_id, prefs.email, prefs.sms, prefs.push, prefs.phone, prefs.language.value, clock.now_us(),
    )  # fmt: skip


_PHONE_SEPARATORS = re.compile(r"[\s().\-]")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def normalize_phone(raw: str) -> str | None:
    """E.164 ("+15550100199") from what a person types ("+1 (555) 010-0199", "0044 20 …"), or None."""
    digits = _PHONE_SEPARATORS.sub("", raw.strip())
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits if _E164.fullmatch(digits) else None


def preferences_from_form(
    email: bool, sms: bool, push: bool, phone: str, language: str
) -> tuple[Preferences | None, dict[str, str]]:
    """The choices a person made on the form, or the problems with them (field -> message)."""
    problems: dict[str, str] = {}
    normalized = normalize_phone(phone) if phone.strip() else None
    if phone.strip() and normalized is None:
        problems["phone"] = "Enter a mobile number with its country code, like +1 555 010 0199."
    elif sms and normalized is None:
        problems["phone"] = "Enter the mobile number for text messages, or turn text messages off."
    if language not in tuple(Language):
        problems["language"] = "Choose a language from the list."
    if problems:
        return None, problems
    return Preferences(email, sms, push, normalized, Language(language)), problems


# --------------------------------------------------------------------------------------------------
# Delivering (the job)


@dataclass(frozen=True)
class Delivery:
    id: str
    org_id: str
    account_id: str
    channel: str
    address: str
    kind: Kind
    language: Language
    text: str
    status: str


_DELIVERY_COLUMNS = "id, org_id, account_id, channel, address, kind, language, text, status"


def _delivery(row: Any) -> Delivery:
    return Delivery(row[0], row[1], row[2], row[3], row[4], Kind(row[5]), Language(row[6]), row[7], row[8])


class DeliveryIncomplete(Exception):
    """Some channel of the notification was not delivered on this attempt; the job retries it."""


async def _plan(db: Database, settings: Settings, args: dict[str, Any]) -> list[Delivery]:
    """The notification's delivery rows: made on the first run from the account's current choices,
    read back on every later run (so a re-run neither adds nor drops a channel)."""
    notification_id, org_id, account_id = args["notification"], args["org"], args["account"]
    async with db.transaction() as conn:
        select = f"SELECT {_DELIVERY_COLUMNS} FROM notification WHERE notification_id = $1"
        rows = await conn.fetch(select, notification_id)
        if rows:
            return sorted((_delivery(r) for r in rows), key=lambda d: CHANNELS.index(d.channel))
        account = await conn.fetchrow("SELECT email, disabled FROM account WHERE id = $1 AND org_id = $2",
                                      account_id, org_id)  # fmt: skip
        if account is None or account[1]:
            log.info("notification %s: the account is gone or disabled; nothing sent", notification_id)
            return []
        prefs = await get_preferences(conn, account_id)
        kind, language = Kind(args["kind"]), prefs.language
        url = texts.absolute(settings.public_url, args["link"])
        now = clock.now_us()
        planned = []
        for channel in prefs.channels():
            if channel == EMAIL:
                address = str(account[0])
                text = texts.email_text(
                    kind, language, url, texts.absolute(settings.public_url, SETTINGS_PAGE)
                )[1]
            else:
                # Push goes to the account's browsers; the push service holds their subscriptions.
                address = (prefs.phone or "") if channel == SMS else f"account:{account_id}"
                text = texts.short_text(kind, language, url)
            planned.append(Delivery(secrets.token_hex(16), org_id, account_id, channel, address, kind, language,
                                    text, QUEUED))  # fmt: skip
        await conn.executemany(
            "INSERT INTO notification (id, notification_id, org_id, account_id, channel, address, address_masked, "
            "kind, language, link, text, status, attempts, error, dedupe_key, created, claimed, sent) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, NULL, $13, $14, NULL, NULL)",
            [(d.id, notification_id, org_id, account_id, d.channel, d.address, mask(d.channel, d.address),
              kind.value, language.value, args["link"], d.text, QUEUED, args.get("key"), now) for d in planned],
        )  # fmt: skip
    return planned


def _message(d: Delivery) -> Message:
    subject = texts.email_text(d.kind, d.language, "", "")[0]
    return Message(d.id, d.org_id, d.channel, d.address, d.language.value, subject, d.text)


def _lock(conn: Conn) -> str:
    return " FOR UPDATE" if conn.dialect == "postgresql" else ""


def _refused_for_good(exc: Exception) -> bool:
    """The mail server refused the address with a permanent (5xx) answer: retrying cannot help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return False


async def _record_failure(job: jobs.JobContext, d: Delivery, exc: Exception, *, count_attempt: bool) -> bool:
    """Record a failed attempt; True when the delivery is given up (nothing more to try)."""
    final = _refused_for_good(exc) or job.job.attempts >= job.job.max_attempts
    log.warning("notification delivery %s by %s failed (%s)%s", d.id, d.channel, type(exc).__name__,
                "; giving up" if final else "; it will be retried")  # fmt: skip
    async with job.db.transaction() as conn:
        await conn.execute(
            "UPDATE notification SET status = $1, error = $2, attempts = attempts + $3 WHERE id = $4 AND status <> $5",
            FAILED if final else QUEUED, type(exc).__name__[:100], 1 if count_attempt else 0, d.id, SENT,
        )  # fmt: skip
    return final


async def _deliver_in_transaction(job: jobs.JobContext, channel: Channel, d: Delivery) -> bool:
    """A transactional channel: the message is written with the row that says it was sent. True
    when nothing is left to do for this delivery (sent, or given up)."""
    try:
        async with job.db.transaction() as conn:
            status = await conn.fetchval(f"SELECT status FROM notification WHERE id = $1{_lock(conn)}", d.id)
            if status in (SENT, FAILED):
                return True
            await channel.deliver(_message(d), conn)
            now = clock.now_us()
            await conn.execute(
                "UPDATE notification SET status = $1, sent = $2, claimed = $2, attempts = attempts + 1, "
                "error = NULL WHERE id = $3",
                SENT, now, d.id,
            )  # fmt: skip
    except Exception as exc:
        return await _record_failure(job, d, exc, count_attempt=True)
    log.info("notification delivery %s sent by %s", d.id, d.channel)
    return True


async def _deliver_outside(job: jobs.JobContext, channel: Channel, d: Delivery) -> bool:
    """A channel outside the database: claim (commit), send, record (commit). True when nothing is
    left to do for this delivery (sent, or given up)."""
    async with job.db.transaction() as conn:
        row = await conn.fetchrow(
            f"SELECT status, claimed FROM notification WHERE id = $1{_lock(conn)}", d.id
        )
        status, claimed = (row[0], row[1]) if row is not None else (FAILED, None)
        if status in (SENT, FAILED):
            return True
        now = clock.now_us()
        if status == SENDING and claimed is not None and now - int(claimed) < CLAIM_SECONDS * jobs.US:
            log.warning("notification delivery %s is being sent by another worker", d.id)
            return False
        # A row still "sending" here lost its worker between the claim and the record: the server
        # may or may not have accepted it. It is sent again (at least once; decision 0011).
        await conn.execute(
            "UPDATE notification SET status = $1, claimed = $2, attempts = attempts + 1 WHERE id = $3",
            SENDING, now, d.id,
        )  # fmt: skip
    try:
        await channel.deliver(_message(d), None)
    except Exception as exc:
        return await _record_failure(job, d, exc, count_attempt=False)
    async with job.db.transaction() as conn:
        await conn.execute(
            "UPDATE notification SET status = $1, sent = $2, error = NULL WHERE id = $3",
            SENT,
            clock.now_us(),
            d.id,
        )
    log.info("notification delivery %s sent by %s", d.id, d.channel)
    return True


async def tell_patient(
    conn: Conn, org_id: str, patient_id: str, kind: Kind | str, link: str, *, key: str | None = None
) -> list[str]:
    """``send`` to everyone who reads ``patient_id``'s portal: the patient's own accounts and the
    proxies whose grant is active now. ``key`` (if any) is made per account. Returns the accounts."""
    accounts = [a for a, _email in await accounts_for_patient(conn, org_id, patient_id)]
    for account_id in accounts:
        await send(conn, org_id, account_id, kind, link, key=f"{key}:{account_id}" if key else None)
    return accounts


@jobs.handler(DELIVER)
async def deliver_notification(job: jobs.JobContext, args: dict[str, Any]) -> None:
    """Deliver one notification on every channel its account chose; safe to run again."""
    settings = job.settings
    channels = channels_for(settings)
    incomplete = 0
    for d in await _plan(job.db, settings, args):
        if d.status in (SENT, FAILED):
            continue
        channel = channels[d.channel]
        deliver = _deliver_in_transaction if channel.transactional else _deliver_outside
        if not await deliver(job, channel, d):
            incomplete += 1
    if incomplete:
        raise DeliveryIncomplete(f"{incomplete} channel(s) not delivered yet")


# --------------------------------------------------------------------------------------------------
# What staff see


@dataclass(frozen=True)
class DeliveryView:
    created: int
    channel: str
    address_masked: str
    kind: str
    language: str
    status: str
    attempts: int
    error: str | None
    sent: int | None


async def recent_deliveries(
    conn: Conn, org_id: str, *, channel: str | None = None, status: str | None = None, limit: int = 200
) -> list[DeliveryView]:
    """The organization's latest deliveries, newest first: masked addresses, kinds and times only."""
    where, params = ["org_id = $1"], [org_id]
    for column, value in (("channel", channel), ("status", status)):
        if value:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    rows = await conn.fetch(
        "SELECT created, channel, address_masked, kind, language, status, attempts, error, sent FROM notification "
        f"WHERE {' AND '.join(where)} ORDER BY created DESC, id LIMIT {int(limit)}",
        *params,
    )
    return [DeliveryView(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], r[8]) for r in rows]


async def delivery_counts(conn: Conn, org_id: str, since_us: int) -> dict[tuple[str, str], int]:
    """(channel, status) -> deliveries made since ``since_us`` in the organization."""
    rows = await conn.fetch(
        "SELECT channel, status, count(*) FROM notification WHERE org_id = $1 AND created >= $2 "
        "GROUP BY channel, status",
        org_id, since_us,
    )  # fmt: skip
    return {(r[0], r[1]): int(r[2]) for r in rows}
