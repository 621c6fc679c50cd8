"""The audit trail: a BALP AuditEvent for every access to health information, append-only and
hash-chained (docs/decisions/0007-audit-trail.md).

Kept import-light: ``core.schema`` imports ``audit.tables`` through this package.
"""
