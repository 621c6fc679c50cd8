"""The server's CapabilityStatement, built from what the store really supports."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from housecall.fhir import jsonio
from housecall.fhir.indexing import search_params
from housecall.fhir.validation import RESOURCE_TYPES

INTERACTIONS = [
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
]  # fmt: skip
_DOCS = {
    "token": "system|code, |code, code; :not, :text, :missing",
    "string": "case- and accent-insensitive prefix; :exact, :contains, :missing",
    "reference": "Type/id, id, absolute URL; :Type, chaining one level, :missing",
    "date": "eq ne lt gt le ge sa eb ap; partial dates; periods",
    "quantity": "[prefix]value[|system|code]",
    "number": "[prefix]value (precision-aware eq)",
    "uri": "exact; :below",
}


def _resource_entry(res_type: str) -> dict[str, Any]:
    params = [
        {"name": sp.code, "type": sp.type, "documentation": _DOCS.get(sp.type, "")}
        for sp in sorted(search_params(res_type).values(), key=lambda p: p.code)
        if sp.indexed
    ]
    params += [
        {"name": "_id", "type": "token"},
        {"name": "_lastUpdated", "type": "date"},
    ]
    entry: dict[str, Any] = {
        "type": res_type,
        "interaction": [{"code": c} for c in INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-match",  # If-None-Match on read answers 304; If-Modified-Since is ignored
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical"],
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": params,
    }
    if res_type == "Patient":
        entry["operation"] = [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
        ]
    return entry


OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def smart_security(base_url: str) -> dict[str, Any]:
    """rest.security: SMART on FHIR, with the OAuth endpoints in the oauth-uris extension
    (SMART App Launch conformance; ``.well-known/smart-configuration`` says the same and more)."""
    root = base_url.removesuffix("/fhir")
    uris = [
        ("authorize", "authorize"),
        ("token", "token"),
        ("revoke", "revoke"),
        ("introspect", "introspect"),
    ]
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [{"url": name, "valueUri": f"{root}/oauth/{path}"} for name, path in uris]
                + [{"url": "manage", "valueUri": f"{root}/account/apps"}],
            }
        ],
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see https://hl7.org/fhir/smart-app-launch/)",
            }
        ],
        "description": "Bearer tokens from the SMART App Launch authorization server; discovery at "
        f"{base_url}/.well-known/smart-configuration",
    }


@lru_cache(maxsize=4)
def capability_statement(base_url: str, extra_json: bytes = b"") -> bytes:
    doc: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-27",
        "publisher": "Housecall",
        "kind": "instance",
        # No version: responses never name the software's version (SECURITY.md row 27).
        "software": {"name": "Housecall"},
        "implementation": {"description": "Housecall FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/merge-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": smart_security(base_url),
                "resource": [_resource_entry(t) for t in sorted(RESOURCE_TYPES)],
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
                "searchParam": [{"name": "_count", "type": "number"}, {"name": "_sort", "type": "string"}],
                "operation": [
                    {
                        "name": "validate",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                    }
                ],
            }
        ],
    }
    if extra_json:
        doc["rest"][0].update(jsonio.loads(extra_json))
    return jsonio.dumps(doc)
