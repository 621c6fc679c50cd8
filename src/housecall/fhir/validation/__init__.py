"""Structural validation of FHIR R4 resources (contract; implementation in progress).

``validate_resource(resource, expected_type=None) -> list[Issue]`` returns an empty list when the
resource is valid R4: known elements only, types, cardinality, required elements, primitive formats,
reference shape, contained resources. Each Issue names the element path, e.g.
``Questionnaire.item[0].item[1].linkId``.
"""
