"""Discovery: ``.well-known/smart-configuration`` (SMART App Launch conformance) at the FHIR base
and at the server root, the OAuth URIs in the CapabilityStatement, OpenID configuration, JWKS."""

from __future__ import annotations

import pytest

from tests.smart.conftest import BASE, FHIR, Smart

REQUIRED_CAPABILITIES = {
    "launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "context-standalone-patient", "permission-patient", "permission-user", "permission-v2", "permission-offline",
    "sso-openid-connect",
}  # fmt: skip


@pytest.mark.parametrize(
    "path", ["/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration"]
)
async def test_smart_configuration(smart: Smart, path: str) -> None:
    answer = await smart.http.get(path)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    doc = answer.json()
    assert doc["issuer"] == FHIR
    assert doc["authorization_endpoint"] == f"{BASE}/oauth/authorize"
    assert doc["token_endpoint"] == f"{BASE}/oauth/token"
    assert doc["revocation_endpoint"] == f"{BASE}/oauth/revoke"
    assert doc["introspection_endpoint"] == f"{BASE}/oauth/introspect"
    assert doc["jwks_uri"] == f"{BASE}/oauth/jwks"
    assert doc["management_endpoint"] == f"{BASE}/account/apps"
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]  # never "plain"
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "none",
        "client_secret_basic",
        "private_key_jwt",
    }
    assert set(doc["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert set(doc["capabilities"]) >= REQUIRED_CAPABILITIES
    assert {"openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs", "user/*.cruds",
            "system/*.rs"} <= set(doc["scopes_supported"])  # fmt: skip


async def test_urls_follow_the_address_the_client_used(smart: Smart) -> None:
    doc = (await smart.http.get("/.well-known/smart-configuration", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "portal.example.org"})).json()  # fmt: skip
    assert doc["token_endpoint"] == "https://portal.example.org/oauth/token"
    assert doc["issuer"] == "https://portal.example.org/fhir"


async def test_the_capability_statement_carries_the_oauth_uris(smart: Smart) -> None:
    cap = (await smart.http.get("/fhir/metadata")).json()
    security = cap["rest"][0]["security"]
    coding = security["service"][0]["coding"][0]
    assert coding["system"] == "http://terminology.hl7.org/CodeSystem/restful-security-service"
    assert coding["code"] == "SMART-on-FHIR"
    (ext,) = [e for e in security["extension"]
              if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"]  # fmt: skip
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris == {
        "authorize": f"{BASE}/oauth/authorize", "token": f"{BASE}/oauth/token", "revoke": f"{BASE}/oauth/revoke",
        "introspect": f"{BASE}/oauth/introspect", "manage": f"{BASE}/account/apps",
    }  # fmt: skip


async def test_the_capability_statement_with_security_is_valid_for_fhirclient(smart: Smart) -> None:
    from fhirclient.models.capabilitystatement import CapabilityStatement

    cap = CapabilityStatement((await smart.http.get("/fhir/metadata")).json(), strict=True)
    assert cap.rest[0].security.service[0].coding[0].code == "SMART-on-FHIR"


async def test_openid_configuration_and_jwks(smart: Smart) -> None:
    oidc = (await smart.http.get("/fhir/.well-known/openid-configuration")).json()
    assert oidc["issuer"] == FHIR and oidc["jwks_uri"] == f"{BASE}/oauth/jwks"
    assert oidc["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = (await smart.http.get("/oauth/jwks")).json()
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert "d" not in key and "p" not in key  # the public half only
