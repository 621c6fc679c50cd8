"""Keep the Spanish catalog in step with the code: ``python tools/i18n.py`` extracts every string
marked for translation (``_()``/``ngettext`` in Python, ``_()``/``{% trans %}`` in templates) and
adds the new ones to ``src/housecall/web/locale/es.po`` with an empty translation (and drops the
ones no longer used). ``--check`` only reports what is missing (the test suite runs the same
check). Translators then fill the ``msgstr`` lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "housecall"
PO = PACKAGE / "web" / "locale" / "es.po"
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


def current() -> Catalog:
    if not PO.exists():
        return Catalog(project="housecall", locale="es")
    with PO.open("rb") as fh:
        return read_po(fh, locale="es")


def missing(catalog: Catalog, template: Catalog) -> list[str]:
    out = []
    for message in template:
        if not message.id:
            continue
        have = catalog.get(message.id)
        strings = () if have is None else (have.string if isinstance(have.string, tuple) else (have.string,))
        if have is None or have.fuzzy or not all(strings):
            out.append(message.id if isinstance(message.id, str) else message.id[0])
    return out


def main(argv: list[str]) -> int:
    template = extracted()
    catalog = current()
    if "--check" in argv:
        gaps = missing(catalog, template)
        for text in gaps:
            print(f"no Spanish for: {text!r}")
        return 1 if gaps else 0
    catalog.update(template, no_fuzzy_matching=True)
    catalog.obsolete.clear()
    with PO.open("wb") as fh:
        write_po(fh, catalog, width=100, omit_header=False, sort_output=True, include_lineno=False)
    gaps = missing(catalog, template)
    print(f"{len(template)} strings, {len(gaps)} without Spanish in {PO.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
