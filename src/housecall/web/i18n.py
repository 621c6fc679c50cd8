"""English and Spanish: the language of each request, and the translated strings.

Python code marks strings with ``_()`` (``Msg()`` for text made where no language is known, translated
when shown); templates with ``{{ _("…") }}`` and ``{% trans %}``.
English is the source language. The Spanish catalog is every ``locale/es/*.po`` file (gettext PO,
one file per area so that features do not edit the same file), read with Babel when the module
loads; ``tools/i18n.py`` adds new strings and ``tests/web/test_i18n.py`` fails while a string on
any page has no Spanish.

The language of a request is chosen, in order, by the ``hc_lang`` cookie (the language switch in
every page's footer, and the account's preference at sign-in) and the browser's
``Accept-Language``; ``LanguageMiddleware`` sets it for everything the request runs.
"""

from __future__ import annotations

import gettext as _gettext
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
LANGUAGES = {"en": "English", "es": "Español"}
DEFAULT = "en"
COOKIE = "hc_lang"

_current: ContextVar[str] = ContextVar("housecall_language", default=DEFAULT)


class _PoTranslations(_gettext.NullTranslations):
    """A PO catalog in memory (no compiled .mo files to build or ship)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.singular: dict[str, str] = {}
        self.plural: dict[str, tuple[str, ...]] = {}
        from babel.messages.pofile import read_po

        for path in sorted(folder.glob("*.po")):
            with path.open("rb") as fh:
                self._add(read_po(fh, locale=folder.name))

    def _add(self, catalog: Any) -> None:
        for message in catalog:
            if not message.id or message.fuzzy:
                continue
            if isinstance(message.id, tuple | list):
                forms = tuple(str(f) for f in message.string or ())
                if forms and all(forms):
                    self.plural[str(message.id[0])] = forms
            elif message.string:
                self.singular[str(message.id)] = str(message.string)

    def gettext(self, message: str) -> str:
        return self.singular.get(message, message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        forms = self.plural.get(msgid1)
        if forms is None:
            return msgid1 if n == 1 else msgid2
        return forms[0] if n == 1 else forms[-1]  # Spanish: one, other (CLDR's 'many' is for millions)


class _Catalogs(dict[str, _gettext.NullTranslations]):
    """The catalog of each language, each read on first use: a process that shows no page (an
    import, a migration) does not parse the PO files and Babel at start."""

    def __missing__(self, lang: str) -> _gettext.NullTranslations:
        if lang not in LANGUAGES:
            raise KeyError(lang)
        catalog = _gettext.NullTranslations() if lang == DEFAULT else _PoTranslations(HERE / "locale" / lang)
        self[lang] = catalog
        return catalog


_catalogs = _Catalogs()


def current() -> str:
    return _current.get()


def use(lang: str) -> None:
    """Make ``lang`` the language of the running request (or job)."""
    _current.set(lang if lang in LANGUAGES else DEFAULT)


class Msg(str):
    """English text marked for translation now and translated when shown.

    For messages made where no language is known yet (an error raised in a service module, a
    label in a table): the value is the English text with ``params`` filled in, so logs, the CLI
    and tests see English; ``_()`` of it gives the reader's language with the same values.
    ``tools/i18n.py`` extracts the first argument of ``Msg(...)`` like that of ``_()``.
    """

    msgid: str
    params: dict[str, object]

    def __new__(cls, msgid: str, **params: object) -> Msg:
        self = super().__new__(cls, msgid % params if params else msgid)
        self.msgid = msgid
        self.params = params
        return self


def _(message: str) -> str:
    if isinstance(message, Msg):
        text = _catalogs[_current.get()].gettext(message.msgid)
        return text % message.params if message.params else text
    return _catalogs[_current.get()].gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _catalogs[_current.get()].ngettext(singular, plural, n)


def translate(lang: str, message: str) -> str:
    """``message`` in ``lang``, whatever the running request's language (e-mails to others)."""
    catalog = _catalogs[lang if lang in LANGUAGES else DEFAULT]
    if isinstance(message, Msg):
        text = catalog.gettext(message.msgid)
        return text % message.params if message.params else text
    return catalog.gettext(message)


# Where an account's saved language is kept: functions (connection, account id) -> "en", "es" or
# None, asked at sign-in so the person's pages follow their choice on any device. The feature that
# stores the preference (notification settings) registers its lookup here; none is required.
SAVED_LANGUAGE: list[Callable[[Any, str], Awaitable[str | None]]] = []
COOKIE_MAX_AGE = 365 * 86400


async def saved_language(conn: Any, account_id: str) -> str | None:
    """The account's saved language, if a registered lookup knows one."""
    for lookup in SAVED_LANGUAGE:
        lang = await lookup(conn, account_id)
        if lang in LANGUAGES:
            return lang
    return None


def remember(response: Any, lang: str) -> None:
    """Set the language cookie on ``response`` (the footer's switch, and sign-in)."""
    if lang in LANGUAGES:
        response.set_cookie(COOKIE, lang, max_age=COOKIE_MAX_AGE, secure=True, httponly=True, samesite="lax")


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: the cookie's, else the first of the browser's we have."""
    if cookie in LANGUAGES:
        return cookie  # type: ignore[return-value]
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return DEFAULT


# -- dates and times in the reader's language ---------------------------------------------------


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):  # a calendar day: its noon, so no time zone moves it to another day
        return datetime(value.year, value.month, value.day, 12, tzinfo=UTC)
    if isinstance(value, int | float):  # µs since the epoch, as the store keeps times
        return datetime.fromtimestamp(value / 1e6, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def date_text(value: Any, form: str = "medium") -> str:
    """A FHIR date or dateTime (or µs) as a date a person reads ("Mar 4, 2026", "4 mar 2026")."""
    if isinstance(value, str) and len(value) == 4:
        return value  # a year alone
    when = _instant(value if not (isinstance(value, str) and len(value) == 7) else value + "-01")
    from babel.dates import format_date

    return format_date(when, form, locale=current()) if when else ""


def datetime_text(value: Any, tz: str = "UTC", form: str = "medium") -> str:
    """An instant as a date and time in the zone ``tz`` (an IANA name, e.g. America/New_York)."""
    when = _instant(value)
    from babel.dates import format_datetime

    return format_datetime(when, form, tzinfo=ZoneInfo(tz), locale=current()) if when else ""


def time_text(value: Any, tz: str = "UTC") -> str:
    when = _instant(value)
    from babel.dates import format_time

    return format_time(when, "short", tzinfo=ZoneInfo(tz), locale=current()) if when else ""


class LanguageMiddleware:
    """Pure ASGI: sets the request's language before anything else runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/fhir"):
            cookie = accept = None
            for name, value in scope.get("headers", ()):
                if name == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        key, _sep, val = part.strip().partition("=")
                        if key == COOKIE:
                            cookie = val
                elif name == b"accept-language":
                    accept = value.decode("latin-1")
            use(choose(cookie, accept))
        await self.app(scope, receive, send)
