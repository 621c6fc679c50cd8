"""Notification tables (platform data, not clinical): what each account wants to be told through
which channel, every delivery made, and the local outbox that stands in for the SMS carrier and the
web push service.

Registered on ``core.schema.metadata`` (which imports this module) so Alembic sees them. Times are
microseconds since the Unix epoch (UTC). No table here holds health information: a delivery keeps
its kind ("new_message"), a fixed sentence and a link to a page that asks for sign-in.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from housecall.core.schema import metadata

# One row per account that has changed its choices; an account without one gets the defaults
# (e-mail on, SMS and web push off, English). ``phone`` is E.164 ("+15551234567").
notification_preference = Table(
    "notification_preference",
    metadata,
    Column("account_id", String(32), ForeignKey("account.id"), primary_key=True),
    Column("email", Boolean, nullable=False),
    Column("sms", Boolean, nullable=False),
    Column("push", Boolean, nullable=False),
    Column("phone", String(16), nullable=True),
    Column("language", String(8), nullable=False),
    Column("updated", BigInteger, nullable=False),
)

# One row per (notification, channel): the delivery record staff see on /admin/outbox, and the
# claim that makes a re-run after a killed worker skip what was sent (docs/decisions/0011).
# ``status``: queued -> sending (claimed, for channels outside the database) -> sent | failed.
notification = Table(
    "notification",
    metadata,
    Column("id", String(32), primary_key=True),  # the delivery; also the e-mail's Message-ID
    Column("notification_id", String(32), nullable=False),  # one per notify.send call
    Column("org_id", String(64), nullable=False),
    Column("account_id", String(32), nullable=False),
    Column("channel", String(8), nullable=False),  # email | sms | push
    Column("address", String(254), nullable=False),  # where it goes; never shown
    Column("address_masked", String(64), nullable=False),  # what staff see: "a•••@example.org"
    Column("kind", String(32), nullable=False),
    Column("language", String(8), nullable=False),
    Column("link", String(500), nullable=False),
    Column("text", Text, nullable=False),  # exactly what was sent (fixed sentence + link)
    Column("status", String(8), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", String(100), nullable=True),  # the last failure's exception type, never its message
    Column("dedupe_key", String(200), nullable=True),  # the caller's key, if any
    Column("created", BigInteger, nullable=False),
    Column("claimed", BigInteger, nullable=True),  # when the last attempt began
    Column("sent", BigInteger, nullable=True),
    Index("ux_notification_channel", "notification_id", "channel", unique=True),
    Index("ix_notification_org_created", "org_id", "created"),
)

# The local SMS carrier and web push service: a message is "sent" by writing it here, in the same
# transaction that marks its delivery sent, so it is written exactly once (the primary key is the
# delivery's id). A Twilio or Web Push adapter replaces the write with the provider's API call.
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("delivery_id", String(32), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("channel", String(8), nullable=False),  # sms | push
    Column("address", String(254), nullable=False),  # E.164 phone number, or the account for push
    Column("text", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Index("ix_notification_outbox_org_created", "org_id", "created"),
)
