"""What a notification says: one fixed sentence per kind, in the account's language, and a link.

The sentences are written here, not composed from data, so no health information can reach an
e-mail, a text message or a push notification: they never name a person, a clinician, an
organization (its name can say what it treats), a medicine, a test or a time. The link points to a
page that asks for sign-in; the page shows the rest. Every kind has every language (a test holds
the table to that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """Why someone is told to look at Housecall. Features pick one; there is no free text."""

    NEW_MESSAGE = "new_message"  # a portal message arrived
    REFILL_DECIDED = "refill_decided"  # a refill request was answered
    RESULT_RELEASED = "result_released"  # a result was released to the patient
    APPOINTMENT_REMINDER = "appointment_reminder"  # a booked appointment is coming up
    APPOINTMENT_CHANGED = "appointment_changed"  # booked, moved or cancelled
    STATEMENT_READY = "statement_ready"  # a bill or statement is ready
    VISIT_STARTING = "visit_starting"  # the clinician has opened the video visit
    VISIT_JOIN = "visit_join"  # a single-use link into the person's own visit (visits/join.py)
    FORMS_DUE = "forms_due"  # forms to fill in before a visit are still missing


class Language(StrEnum):
    EN = "en"
    ES = "es"


LANGUAGE_NAMES = {Language.EN: "English", Language.ES: "Español"}


@dataclass(frozen=True)
class Wording:
    subject: str  # e-mail subject and push title
    sentence: str  # the one sentence every channel carries


WORDING: dict[Language, dict[Kind, Wording]] = {
    Language.EN: {
        Kind.NEW_MESSAGE: Wording("New message", "You have a new message in Housecall."),
        Kind.REFILL_DECIDED: Wording("Your request was answered", "There is an answer to your request in Housecall."),
        Kind.RESULT_RELEASED: Wording("Something new in your record", "There is something new in your Housecall record."),
        Kind.APPOINTMENT_REMINDER: Wording("Appointment reminder", "You have an appointment coming up. See the details in Housecall."),
        Kind.APPOINTMENT_CHANGED: Wording("Appointment update", "One of your appointments has changed. See the details in Housecall."),
        Kind.STATEMENT_READY: Wording("New statement", "You have a new statement in Housecall."),
        Kind.VISIT_STARTING: Wording("Your visit is ready", "Your visit is ready to start. Join it from Housecall."),
        Kind.VISIT_JOIN: Wording("Your visit is ready to join", "Your Housecall visit is ready to join:"),
        Kind.FORMS_DUE: Wording("Forms to fill in", "Please fill in your forms before your visit. Do it in Housecall."),
    },
    Language.ES: {
        Kind.NEW_MESSAGE: Wording("Mensaje nuevo", "Tiene un mensaje nuevo en Housecall."),
        Kind.REFILL_DECIDED: Wording("Su solicitud tiene respuesta", "Hay una respuesta a su solicitud en Housecall."),
        Kind.RESULT_RELEASED: Wording("Novedades en su expediente", "Hay algo nuevo en su expediente de Housecall."),
        Kind.APPOINTMENT_REMINDER: Wording("Recordatorio de cita", "Tiene una cita próximamente. Vea los detalles en Housecall."),
        Kind.APPOINTMENT_CHANGED: Wording("Cambio en una cita", "Una de sus citas ha cambiado. Vea los detalles en Housecall."),
        Kind.STATEMENT_READY: Wording("Estado de cuenta nuevo", "Tiene un estado de cuenta nuevo en Housecall."),
        Kind.VISIT_STARTING: Wording("Su consulta está lista", "Su consulta está lista para comenzar. Únase desde Housecall."),
        Kind.VISIT_JOIN: Wording("Ya puede unirse a su consulta", "Ya puede unirse a su consulta de Housecall:"),
        Kind.FORMS_DUE: Wording("Formularios pendientes", "Complete sus formularios antes de su consulta. Hágalo en Housecall."),
    },
}  # fmt: skip

_EMAIL_BODY = {
    Language.EN: (
        "{sentence}\n\n"
        "Sign in to see it:\n{url}\n\n"
        "You get this e-mail because e-mail notifications are on for your Housecall account.\n"
        "To change how we tell you: {settings_url}\n"
    ),
    Language.ES: (
        "{sentence}\n\n"
        "Inicie sesión para verlo:\n{url}\n\n"
        "Recibe este correo porque tiene activados los avisos por correo en su cuenta de Housecall.\n"
        "Para cambiar cómo le avisamos: {settings_url}\n"
    ),
}

# A join link is the way in itself (no sign-in needed), and it works once, for a short time.
_EMAIL_JOIN_BODY = {
    Language.EN: (
        "{sentence}\n{url}\n\n"
        "The link works once and for a short time. If it has expired, sign in to Housecall to join.\n\n"
        "You get this e-mail because e-mail notifications are on for your Housecall account.\n"
        "To change how we tell you: {settings_url}\n"
    ),
    Language.ES: (
        "{sentence}\n{url}\n\n"
        "El enlace funciona una sola vez y por poco tiempo. Si ha caducado, inicie sesión en Housecall para unirse.\n\n"
        "Recibe este correo porque tiene activados los avisos por correo en su cuenta de Housecall.\n"
        "Para cambiar cómo le avisamos: {settings_url}\n"
    ),
}

# A local path to one page, by opaque ids: no scheme or host (the public address is added here, so
# a link can never send anyone elsewhere), no spaces, no fragments. Features link to the page that
# shows the news ("/messages/3f2a…"), never carry the news in the link.
LINK = re.compile(r"/(?![/\\])[A-Za-z0-9._~/-]*(\?[A-Za-z0-9._~=&-]*)?")
MAX_LINK = 500


def check_link(link: str) -> str:
    """``link`` if it is a local path Housecall can put in a notification; ValueError otherwise."""
    if not isinstance(link, str) or len(link) > MAX_LINK or not LINK.fullmatch(link):
        raise ValueError("a notification links to a local path such as /messages/<id>")
    return link


def absolute(public_url: str, link: str) -> str:
    return public_url.rstrip("/") + link


def wording(kind: Kind, language: Language) -> Wording:
    return WORDING[language][kind]


def short_text(kind: Kind, language: Language, url: str) -> str:
    """What an SMS or a push notification says: the sentence and the link."""
    return f"{wording(kind, language).sentence} {url}"


def email_text(kind: Kind, language: Language, url: str, settings_url: str) -> tuple[str, str]:
    """(subject, body) of the e-mail."""
    w = wording(kind, language)
    template = _EMAIL_JOIN_BODY if kind is Kind.VISIT_JOIN else _EMAIL_BODY
    body = template[language].format(sentence=w.sentence, url=url, settings_url=settings_url)
    return f"Housecall: {w.subject}", body
