"""FHIR JSON in and out, keeping each decimal's text.

A FHIR decimal's precision is part of its value (R4 datatypes.html#decimal): ``1.00`` is not
``1.0``. orjson reads numbers into floats and writes the shortest text of the float, so a resource
stored through it would come back with ``1.00`` as ``1.0`` and ``2.5e3`` as ``2500.0``.

Most documents hold no such number, and they keep orjson's speed: ``loads`` parses with orjson
(which also rejects what is not strict JSON) and scans the bytes for float literals whose text
orjson would not write back. Only when one is found is the document parsed again with the standard
library, those numbers becoming ``FhirDecimal`` - a ``float`` that remembers its text, so
validation, indexing and comparisons see a number, and ``dumps`` writes the text back unchanged.
Every serialization of a resource goes through ``dumps``; orjson alone refuses a ``FhirDecimal``
(a loud TypeError, never a silently changed value).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
JSONEncodeError = orjson.JSONEncodeError

# Where a number with a fraction or an exponent ends a JSON value: each pattern starts with a
# literal ('.' or 'e', on the lowercased text), which the regex engine finds with a fast scan
# instead of trying every position (the full-token pattern this replaces took ~30 ms per MB). The
# start of the number and the character before it are checked in Python, on these few matches.
# Matches inside strings too; those only cost the slower parse, never a wrong value.
_FRACTION = re.compile(rb"\.\d+(?:e[+-]?\d+)?(?=\s*[,\]}])")
_EXPONENT = re.compile(rb"e[+-]?\d+(?=\s*[,\]}])")
_INTEGER_PART = frozenset(b"0123456789")
_WHITESPACE = frozenset(b" \t\n\r\f\v")
_VALUE_START = frozenset(b":[,")


class FhirDecimal(float):
    """A JSON number whose text orjson would not reproduce; ``text`` is that text."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> FhirDecimal:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[FhirDecimal], tuple[str]]:
        return (FhirDecimal, (self.text,))

    def __copy__(self) -> FhirDecimal:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FhirDecimal:
        return self

    def __repr__(self) -> str:
        return self.text


def _default(value: Any) -> Any:
    if isinstance(value, FhirDecimal):
        return orjson.Fragment(value.text.encode())
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _number(text: str) -> float:
    value = float(text)
    return value if orjson.dumps(value).decode() == text else FhirDecimal(text)


def _refuse_constant(name: str) -> Any:
    raise orjson.JSONDecodeError(f"{name} is not JSON", name, 0)


def _needs_text(data: bytes) -> bool:
    """Whether ``data`` holds, where a JSON value starts (after ':', '[' or ','), a number with a
    fraction or an exponent whose text orjson would not write back."""
    lowered = data.lower()
    for pattern in (_FRACTION, _EXPONENT):
        for match in pattern.finditer(lowered):
            start = match.start()
            while start > 0 and lowered[start - 1] in _INTEGER_PART:
                start -= 1
            if start == match.start():
                continue  # no digit before the '.' or 'e': not a number
            if start > 0 and lowered[start - 1] == 0x2D:  # '-'
                start -= 1
            before = start - 1
            while before >= 0 and lowered[before] in _WHITESPACE:
                before -= 1
            if before < 0 or lowered[before] not in _VALUE_START:
                continue
            literal = data[start : match.end()]
            if orjson.dumps(float(literal)) != literal:
                return True
    return False


def loads(data: bytes | str) -> Any:
    """Parse JSON (strictly, as orjson does), keeping the text of decimals orjson would change."""
    parsed = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if not _needs_text(raw):
        return parsed
    return json.loads(raw, parse_float=_number, parse_constant=_refuse_constant)


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS if sort_keys else None)
