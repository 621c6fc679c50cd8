"""``[type]/$validate`` and ``[type]/[id]/$validate``: check a resource without storing it
(R4 resource-operation-validate.html). Answers 200 with an OperationOutcome listing every issue."""

from __future__ import annotations

from typing import Any

from housecall.fhir.errors import OutcomeIssue, bad_request, operation_outcome
from housecall.fhir.validation import validate_resource


def run(res_type: str, body: Any) -> dict[str, Any]:
    resource = body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = next(
            (
                p.get("resource")
                for p in body.get("parameter") or []
                if isinstance(p, dict) and p.get("name") == "resource"
            ),
            None,
        )
        if resource is None:
            raise bad_request("Parameters must carry a 'resource' parameter", "required")
    issues = validate_resource(resource, res_type)
    if not issues:
        return operation_outcome([OutcomeIssue("informational", "the resource is valid R4", "information")])
    return operation_outcome([OutcomeIssue(i.code, i.message, "error", i.path) for i in issues])
