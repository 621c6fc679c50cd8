"""Module view of the compiled R4 table (the data lives in ``_r4_tables.json``).

Kept for code that reads the table directly (``housecall.fhir.render`` uses ``TYPES`` to find
mandatory elements).  Prefer ``housecall.fhir.validation.required_elements`` for that.

* ``TYPES[type_name] = {"base": base_type_or_None, "kind": ..., "fields": {json_name: field}}``
  with only the fields the type adds to its ``base`` (Resource/DomainResource/Element/
  BackboneElement elements are listed once, under those names);
* ``field = [fhir_type, repeats (0/1), required (0/1), choice_group_or_None,
  reference_target_types_or_None]``.
"""

from __future__ import annotations

from typing import Any

from ._engine import TABLES

FHIR_VERSION: str = TABLES["fhir_version"]
PRIMITIVE_REGEX: dict[str, str] = TABLES["primitive_regex"]
PRIMITIVE_TYPES: tuple[str, ...] = tuple(TABLES["primitive_types"])
RESOURCE_TYPES: tuple[str, ...] = tuple(TABLES["resource_types"])
TYPES: dict[str, dict[str, Any]] = TABLES["types"]
