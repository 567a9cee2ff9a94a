"""Authorization as FastAPI dependencies: every /v1 route needs a valid token from a trusted issuer; dictation
routes also need the right scopes and the token's launch context. Refusals happen before anything reaches the
FHIR server."""

from __future__ import annotations

from fastapi import Request

from service.auth.principal import Principal
from service.documents.draft import DictationContext
from service.fhir.client import on_behalf_of


async def authenticated(request: Request) -> Principal | None:
    """The caller's Principal; None only when auth is disabled (local demo)."""
    validator = request.app.state.tokens
    if validator is None:
        return None
    principal = await validator.principal(request.headers.get("authorization"))
    request.state.principal = principal
    return principal


def authorize_dictation(request: Request, principal: Principal | None, requested: DictationContext) -> DictationContext:
    """The context a dictation may be written under: the request's, narrowed and checked by the token's."""
    if principal is None:
        return requested
    principal.require("DocumentReference", "c")
    principal.require("Patient", "r")
    if requested.encounter or principal.encounter:
        principal.require("Encounter", "r")
    patient, encounter, author = principal.context(requested.patient or None, requested.encounter,
                                                   requested.author or None)
    fhir_base = request.app.state.settings.fhir.base_url.rstrip("/")
    if fhir_base in (a.rstrip("/") for a in principal.audiences):
        on_behalf_of.set(principal.token)  # the token was issued for the FHIR server: act as the user there
    return requested.model_copy(update={"patient": patient, "encounter": encounter, "author": author})
