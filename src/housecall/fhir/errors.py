"""FHIR errors: every failure the API reports is an OperationOutcome with the right HTTP status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class OutcomeIssue:
    code: str  # http://hl7.org/fhir/R4/valueset-issue-type.html
    diagnostics: str
    severity: str = "error"
    expression: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


@dataclass
class FhirError(Exception):
    """Raised anywhere below the API; the API turns it into an OperationOutcome response."""

    status: int
    code: str
    diagnostics: str
    expression: str | None = None
    more: list[OutcomeIssue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.diagnostics}"

    @property
    def issues(self) -> list[OutcomeIssue]:
        return [OutcomeIssue(self.code, self.diagnostics, "error", self.expression), *self.more]

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[OutcomeIssue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_json() for i in issues]}


def not_found(res_type: str, res_id: str) -> FhirError:
    return FhirError(404, "not-found", f"{res_type}/{res_id} is not known")


def bad_request(diagnostics: str, code: str = "invalid", expression: str | None = None) -> FhirError:
    return FhirError(400, code, diagnostics, expression)
