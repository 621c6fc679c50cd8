"""Secure messaging between patients (and their proxies) and the care team, as FHIR Communications.

``model.py`` is the shape in the store (threads, replies, read state, routing to a pool),
``attachments.py`` the files (checked by content, kept as Binary), ``views.py`` the portal and
workspace pages; docs/decisions/0012-secure-messaging.md says why it is built this way.
"""
