"""Search-index extraction for FHIR R4 resources (contract; implementation in progress).

``extract_index(resource) -> IndexRows`` and ``search_params(resource_type)``; see the module docs.
"""
