"""Housecall: an open-source telehealth platform on a FHIR R4 resource store."""

__version__ = "0.1.0"
