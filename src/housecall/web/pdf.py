"""Plain documents as PDF: a visit summary or a receipt a patient downloads and keeps.

fpdf2 writes the PDF in pure Python with its built-in Helvetica, which covers Latin-1 (English and
Spanish). Characters outside it (typographic dashes and quotes, arrows) are replaced with their
nearest plain form rather than dropped silently; anything else becomes "?".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fpdf import FPDF

_PLAIN = str.maketrans({
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2022": "*", "\u2026": "...",
    "\u2192": "->", "\u2190": "<-", "\u2264": "<=", "\u2265": ">=", "\u00a0": " ", "\u202f": " ",
    "\u2212": "-", "\u2605": "*",
})  # fmt: skip


def latin1(text: str) -> str:
    """``text`` in the characters the PDF's core font has."""
    return text.translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


@dataclass(frozen=True)
class Section:
    """A heading (may be empty) and its lines; ``pairs`` are label/value rows (a receipt's)."""

    heading: str = ""
    text: str = ""
    pairs: Sequence[tuple[str, str]] = ()


def document(title: str, sections: Sequence[Section], *, footer: str = "", author: str = "") -> bytes:
    """A simple A4/Letter-neutral PDF: the title, then each section's heading, rows and text."""
    pdf = FPDF(format="Letter")
    pdf.set_compression(False)  # plain text streams: small documents, and searchable as they are
    pdf.set_title(latin1(title))
    if author:
        pdf.set_author(latin1(author))
    pdf.set_creator("Housecall")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.multi_cell(0, 8, latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for section in sections:
        if section.heading:
            pdf.set_font("Helvetica", style="B", size=12)
            pdf.multi_cell(0, 7, latin1(section.heading), new_x="LMARGIN", new_y="NEXT")
        for label, value in section.pairs:
            pdf.set_font("Helvetica", style="B", size=11)
            pdf.cell(60, 6, latin1(label))
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, latin1(value), new_x="LMARGIN", new_y="NEXT")
        if section.text:
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, latin1(section.text), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    if footer:
        pdf.set_font("Helvetica", style="I", size=9)
        pdf.multi_cell(0, 5, latin1(footer), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
