"""SMART on FHIR and API authorization: OAuth clients, the authorization server, bearer tokens.

Spec: SMART App Launch v2 (https://hl7.org/fhir/smart-app-launch/), RFC 6749, RFC 7636 (PKCE),
RFC 7523 (JWT client assertions), RFC 7009 (revocation), RFC 7662 (introspection).
The access path calls ``tokens.actor_for_token`` and ``scopes.permits``; nothing else here is
on the FHIR request path.
"""
