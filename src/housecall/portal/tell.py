"""Doing work on a patient's behalf.

``on_behalf_of`` gives a ``Records`` acting as Housecall itself on the same transaction: a patient
may not write Tasks (the care team's work items), yet asking for a refill has to put one in the
inbox. The portal page checks first, with the patient's own access, that what the work is about
is theirs; the Task is then written by the service, and its audit event goes to the same list as
the page's own.
"""

from __future__ import annotations

from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.web.records import Records


def on_behalf_of(rec: Records) -> Records:
    """Housecall's own access on ``rec``'s transaction, its audit events kept with ``rec``'s."""
    ctx = rec.ctx
    service = ix.Ctx(ctx.conn, ctx.settings, ctx.base_url, Access.system(rec.actor.org_id))
    return Records(service, rec.address, rec.entries)
