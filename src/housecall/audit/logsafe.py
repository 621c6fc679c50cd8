"""No health information in the application's logs (SECURITY.md row 28).

Three ways it could get there, three answers:

- Query strings (``/fhir/Patient?name=Smith&birthdate=…``): ``housecall serve`` runs uvicorn
  without its access log, and should an operator turn it on, ``DropQueryStrings`` cuts the query
  off every request line. Housecall's own log lines name a method and a path, never a query.
- Bodies: nothing logs them.
- Exception messages: a database error's text carries the row it refused (PostgreSQL's "Failing
  row contains (…)"), a parser's the value it choked on. ``WithholdExceptionMessages`` logs every
  traceback with its frames and exception types but without the messages.
"""

from __future__ import annotations

import logging
import traceback
from types import TracebackType

ACCESS_LOGGER = "uvicorn.access"
WITHHELD = "<message withheld: it may hold health information>"


class DropQueryStrings(logging.Filter):
    """uvicorn's access record is ``'%s - "%s %s HTTP/%s" %d'`` over (client, method, path with
    query, version, status): keep the path, drop the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def safe_traceback(exc: BaseException) -> str:
    """The traceback as logging prints it (causes and contexts too), each message withheld."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = (
                current.__cause__,
                "The above exception was the direct cause of the following exception:",
            )
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = (
                current.__context__,
                "During handling of the above exception, another exception occurred:",
            )
        else:
            current = None
    parts: list[str] = []
    for error, link_text in reversed(chain):
        tb: TracebackType | None = error.__traceback__
        frames = "".join(traceback.format_list(traceback.extract_tb(tb))) if tb else ""
        kind = type(error)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        parts.append(f"Traceback (most recent call last):\n{frames}{name}: {WITHHELD}")
        if link_text:
            parts.append(f"\n{link_text}\n")
    return "\n".join(parts)


class WithholdExceptionMessages(logging.Filter):
    """Set the record's formatted traceback to ``safe_traceback`` (formatters use it as is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = safe_traceback(record.exc_info[1])
        return True


def _add_once(target: logging.Logger | logging.Handler, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in target.filters):
        target.addFilter(kind())


def install() -> None:
    """Idempotent. Called when the application is built, after uvicorn configured its logging:
    the filters go on every handler there is (and on logging's last-resort handler, which prints
    the records of loggers nobody configured), so a record is cleaned whichever logger made it."""
    _add_once(logging.getLogger(ACCESS_LOGGER), DropQueryStrings)
    handlers: list[logging.Handler] = []
    for name in ("", "uvicorn", "uvicorn.error", ACCESS_LOGGER):
        handlers += logging.getLogger(name).handlers
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        _add_once(handler, WithholdExceptionMessages)
