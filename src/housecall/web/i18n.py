"""Translatable strings. Python code marks them with ``_()``; templates with ``{{ _("…") }}`` and
``{% trans %}``. English is the source language; a Spanish catalog (Babel, gettext domain
``housecall``) plugs in here when it exists.
"""

from __future__ import annotations

import gettext as _gettext

translations: _gettext.NullTranslations = _gettext.NullTranslations()


def _(message: str) -> str:
    return translations.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations.ngettext(singular, plural, n)
