"""Drop the reference rows of parameters that are another parameter restricted to one target type

Revision ID: subset_alias_rows
Revises: owner_hash_indexes
Create Date: 2026-11-27 23:30:00
"""

from __future__ import annotations

from alembic import op

revision = "subset_alias_rows"
down_revision = "owner_hash_indexes"
branch_labels = None
depends_on = None

# (resource type, parameter, the parameter whose rows it is, their target type), as
# indexing.SUBSET_ALIASES derived them from the R4 search parameters when this was written.
ALIASES = (
    ("Account", "patient", "subject", "Patient"),
    ("Appointment", "location", "actor", "Location"),
    ("Appointment", "patient", "actor", "Patient"),
    ("Appointment", "practitioner", "actor", "Practitioner"),
    ("AppointmentResponse", "location", "actor", "Location"),
    ("AppointmentResponse", "patient", "actor", "Patient"),
    ("AppointmentResponse", "practitioner", "actor", "Practitioner"),
    ("Basic", "patient", "subject", "Patient"),
    ("CarePlan", "patient", "subject", "Patient"),
    ("CareTeam", "patient", "subject", "Patient"),
    ("ChargeItem", "patient", "subject", "Patient"),
    ("ClinicalImpression", "patient", "subject", "Patient"),
    ("Communication", "patient", "subject", "Patient"),
    ("CommunicationRequest", "patient", "subject", "Patient"),
    ("Composition", "patient", "subject", "Patient"),
    ("Condition", "patient", "subject", "Patient"),
    ("Contract", "patient", "subject", "Patient"),
    ("DeviceRequest", "patient", "subject", "Patient"),
    ("DiagnosticReport", "patient", "subject", "Patient"),
    ("DocumentManifest", "patient", "subject", "Patient"),
    ("DocumentReference", "patient", "subject", "Patient"),
    ("Encounter", "patient", "subject", "Patient"),
    ("Encounter", "practitioner", "participant", "Practitioner"),
    ("Flag", "patient", "subject", "Patient"),
    ("Goal", "patient", "subject", "Patient"),
    ("GuidanceResponse", "patient", "subject", "Patient"),
    ("ImagingStudy", "patient", "subject", "Patient"),
    ("Invoice", "patient", "subject", "Patient"),
    ("List", "patient", "subject", "Patient"),
    ("MeasureReport", "patient", "subject", "Patient"),
    ("Media", "patient", "subject", "Patient"),
    ("MedicationAdministration", "patient", "subject", "Patient"),
    ("MedicationDispense", "patient", "subject", "Patient"),
    ("MedicationRequest", "patient", "subject", "Patient"),
    ("MedicationStatement", "patient", "subject", "Patient"),
    ("Observation", "patient", "subject", "Patient"),
    ("Person", "patient", "link", "Patient"),
    ("Person", "practitioner", "link", "Practitioner"),
    ("Person", "relatedperson", "link", "RelatedPerson"),
    ("Procedure", "patient", "subject", "Patient"),
    ("Provenance", "patient", "target", "Patient"),
    ("QuestionnaireResponse", "patient", "subject", "Patient"),
    ("RequestGroup", "patient", "subject", "Patient"),
    ("RiskAssessment", "patient", "subject", "Patient"),
    ("ServiceRequest", "patient", "subject", "Patient"),
    ("Specimen", "patient", "subject", "Patient"),
    ("Task", "patient", "subject", "Patient"),
)


def upgrade() -> None:
    # The search layer now reads Observation's patient=X as subject rows of Patient/X, and so on;
    # the copies written before are dead weight (one reference row per clinical resource).
    for res_type, param, _parent, _target in ALIASES:
        op.execute(f"DELETE FROM sp_reference WHERE res_type = '{res_type}' AND param = '{param}'")


def downgrade() -> None:
    # Re-derive them from their parents' rows, as the indexer used to write them.
    for res_type, param, parent, target in ALIASES:
        op.execute(
            "INSERT INTO sp_reference (res_type, res_id, param, target_type, target_id, url) "
            f"SELECT res_type, res_id, '{param}', target_type, target_id, url FROM sp_reference "
            f"WHERE res_type = '{res_type}' AND param = '{parent}' AND target_type = '{target}'"
        )
