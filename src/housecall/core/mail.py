"""Outgoing e-mail through SMTP, released only after the unit of work commits.

Services queue ``Mail`` on an ``Outbox`` while they work inside a transaction; the caller sends
the outbox after the block has committed (``await outbox.send(settings)``), so a rolled-back
request never e-mails anyone. Bodies carry no health information: a greeting and a link.
In tests the SMTP server is a real aiosmtpd listening on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage

from housecall.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str
    # Extra header fields, e.g. a Message-ID that stays the same when a notification is re-sent.
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Outbox:
    queued: list[Mail] = field(default_factory=list)

    def add(self, mail: Mail) -> None:
        self.queued.append(mail)

    async def send(self, settings: Settings) -> int:
        """Send what was queued (call after commit); returns how many were accepted by the server.

        A mail server that is down does not fail the request that already committed: the failure
        is logged (without the body, which holds a secret link) and the person can ask again.
        """
        mails, self.queued = self.queued, []
        sent = 0
        for mail in mails:
            try:
                await asyncio.to_thread(send_now, settings, mail)
                sent += 1
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("mail to a recipient could not be sent: %s", type(exc).__name__)
        return sent


def send_now(settings: Settings, mail: Mail) -> None:
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg.set_content(mail.body)
    for name, value in mail.headers:  # after set_content, which drops Content-* fields
        msg[name] = value
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        smtp.send_message(msg)
