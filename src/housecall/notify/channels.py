"""The channels a notification goes out by, behind one interface.

- **E-mail** goes to the configured SMTP server (``core/mail.send_now``; in tests a real aiosmtpd).
- **SMS** and **web push** go to ``notification_outbox``, a table staff can see: the local
  implementation of a carrier that cannot be reached from here. A Twilio (or other carrier) adapter,
  or a Web Push adapter holding the browsers' subscriptions, is a class with ``transactional =
  False`` whose ``deliver`` calls the provider's API; ``channels_for`` is where it is chosen.

A channel is *transactional* when its effect is a write in the database: ``deliver`` gets the
connection of the transaction that also marks the delivery sent, so the message exists exactly when
the delivery says so. Any other channel is called between two commits (claim, then record) and the
service's claim protocol makes it at least once (docs/decisions/0011).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from housecall.core.db import Conn
from housecall.core.mail import Mail, send_now
from housecall.core.settings import Settings
from housecall.identity.clock import clock

EMAIL, SMS, PUSH = "email", "sms", "push"
CHANNELS = (SMS, PUSH, EMAIL)  # the order of delivery: the local ones first, they cannot fail slowly


@dataclass(frozen=True)
class Message:
    delivery_id: str  # stable across re-sends: the e-mail's Message-ID, the outbox row's key
    org_id: str
    channel: str
    address: str
    language: str
    subject: str
    text: str


class Channel(Protocol):
    name: str
    transactional: bool

    async def deliver(self, message: Message, conn: Conn | None) -> None:
        """Send ``message``; raise when it was not accepted. ``conn`` is the open transaction for a
        transactional channel and None for the others (which must not hold one across a network
        call)."""


class SmtpEmail:
    """E-mail through the SMTP server in the settings."""

    name = EMAIL
    transactional = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def deliver(self, message: Message, conn: Conn | None) -> None:
        domain = self.settings.smtp_from.rsplit("@", 1)[-1].strip("> ") or "housecall.invalid"
        mail = Mail(
            to=message.address,
            subject=message.subject,
            body=message.text,
            headers=(
                # The same Message-ID on a re-send, so a mail store can tell it is one message.
                ("Message-ID", f"<notify.{message.delivery_id}@{domain}>"),
                ("Auto-Submitted", "auto-generated"),  # RFC 3834: no out-of-office replies
                ("Content-Language", message.language),
            ),
        )
        await asyncio.to_thread(send_now, self.settings, mail)


class Outbox:
    """The local SMS carrier or push service: the message is written to ``notification_outbox``."""

    transactional = True

    def __init__(self, name: str) -> None:
        self.name = name

    async def deliver(self, message: Message, conn: Conn | None) -> None:
        assert conn is not None, "the outbox writes inside the delivery's transaction"
        await conn.execute(
            "INSERT INTO notification_outbox (delivery_id, org_id, channel, address, text, created) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            message.delivery_id, message.org_id, self.name, message.address, message.text, clock.now_us(),
        )  # fmt: skip


def channels_for(settings: Settings) -> dict[str, Channel]:
    """The channel of each name for this installation."""
    return {EMAIL: SmtpEmail(settings), SMS: Outbox(SMS), PUSH: Outbox(PUSH)}


def mask(channel: str, address: str) -> str:
    """What staff see of an address: enough to recognise it on the phone, not to copy it."""
    if channel == EMAIL:
        local, _, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"[:64]
    if channel == SMS:
        return "•••" + address[-4:]
    return "browser"
