"""No health information in the application's logs (SECURITY.md row 28).

Query strings carry it (``/fhir/Patient?name=Smith&birthdate=…``) and bodies are made of it.
Housecall's own log lines name a method and a path, never a query or a body; ``housecall serve``
runs uvicorn without its access log; and should an operator turn that log on, this filter cuts
the query string off every request line it writes.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class DropQueryStrings(logging.Filter):
    """uvicorn's access record is ``'%s - "%s %s HTTP/%s" %d'`` over (client, method, path with
    query, version, status): keep the path, drop the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def install() -> None:
    """Idempotent: attach the filter to uvicorn's access logger once."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, DropQueryStrings) for f in logger.filters):
        logger.addFilter(DropQueryStrings())
