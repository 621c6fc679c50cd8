"""Keep the Spanish catalog in step with the code.

``python tools/i18n.py AREA`` extracts every string marked for translation (``_()``/``ngettext`` in
Python, ``_()``/``{% trans %}`` in templates) and adds those that no catalog file has yet to
``src/housecall/web/locale/es/AREA.po`` with an empty translation, for a translator to fill.
``--check`` only reports the strings without Spanish (the test suite runs the same check).
The catalog is split by area (core, messaging, …) so that features do not edit the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "housecall"
LOCALE = PACKAGE / "web" / "locale" / "es"
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {
    "**/templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "True", "lstrip_blocks": "True"}
}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}


def extracted() -> Catalog:
    template = Catalog(project="housecall", locale=None)
    for filename, lineno, message, comments, context in extract_from_dir(
        PACKAGE, METHODS, OPTIONS, keywords=KEYWORDS, strip_comment_tags=True
    ):
        if filename.startswith("web/i18n.py"):
            continue  # the module defining _() has no messages of its own
        template.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return template


def read(path: Path) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale="es")


def translated() -> dict[str, bool]:
    """Every msgid in any catalog file -> whether it has a complete, non-fuzzy translation."""
    out: dict[str, bool] = {}
    for path in sorted(LOCALE.glob("*.po")):
        for message in read(path):
            if not message.id:
                continue
            key = message.id if isinstance(message.id, str) else message.id[0]
            strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
            out[key] = out.get(key, False) or (not message.fuzzy and all(strings))
    return out


def missing() -> list[str]:
    have = translated()
    out = []
    for message in extracted():
        if message.id:
            key = message.id if isinstance(message.id, str) else message.id[0]
            if not have.get(key):
                out.append(key)
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        gaps = missing()
        for text in gaps:
            print(f"no Spanish for: {text!r}")
        return 1 if gaps else 0
    if len(argv) != 1:
        print(__doc__)
        return 2
    path = LOCALE / f"{argv[0]}.po"
    catalog = read(path) if path.exists() else Catalog(project="housecall", locale="es")
    known = translated()
    added = 0
    for message in extracted():
        key = message.id if isinstance(message.id, str) else message.id[0]
        if message.id and key not in known and message.id not in catalog:
            catalog.add(message.id, "" if isinstance(message.id, str) else ("", ""), message.locations)
            added += 1
    with path.open("wb") as fh:
        write_po(fh, catalog, width=100, sort_output=True, include_lineno=False)
    print(f"{added} new strings in {path.relative_to(ROOT)}; {len(missing())} strings still without Spanish")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
