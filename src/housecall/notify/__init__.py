"""Notifications: e-mail, SMS and web push that say only "look at Housecall", with a link.

Features call ``send(conn, org_id, account_id, Kind.NEW_MESSAGE, "/messages/<id>")`` inside their
unit of work (``from housecall.notify import Kind, send``); see ``service.py``.
"""

from housecall.notify.service import send, tell_patient
from housecall.notify.texts import Kind

__all__ = ["Kind", "send", "tell_patient"]
