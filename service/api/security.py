"""Authorization as FastAPI dependencies: every /v1 route needs a valid token from a trusted issuer; dictation
routes also need the right scopes and the token's launch context. Refusals happen before anything reaches the
FHIR server."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from service.auth.errors import Forbidden, InvalidToken, MalformedAuthorization
from service.auth.principal import Principal
from service.auth.scopes import allows
from service.auth.smart_app import session_principal
from service.documents.draft import DictationContext
from service.fhir.client import on_behalf_of
from service.vocabulary.models import SOURCES


SESSION_COOKIE = "scribe_session"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


async def authenticated(request: Request) -> Principal | None:
    """The caller's Principal; None only when auth is disabled (local demo). A bearer header (API clients) or the
    SMART app's session cookie (the page), which also needs the CSRF token on state-changing requests."""
    validator = request.app.state.tokens
    if validator is None:
        return None
    offered = request.headers.getlist("authorization")
    if len(offered) > 1:
        raise MalformedAuthorization("the request has more than one Authorization header; send exactly one")
    if not offered and SESSION_COOKIE in request.cookies:
        session = open_session(request)
        if request.method not in _SAFE_METHODS:
            csrf_checked(request, session)
        settings = request.app.state.settings
        principal = session_principal(session, settings.fhir.base_url, settings.smart_app.client_id)
    else:
        principal = await validator.principal(offered[0] if offered else None)
    request.state.principal = principal
    return principal


def open_session(request: Request) -> dict[str, Any]:
    cookies = request.app.state.smart_app[1] if request.app.state.smart_app else None
    session = cookies.open("session", request.cookies.get(SESSION_COOKIE)) if cookies else None
    if session is None:
        raise InvalidToken("the app session is missing, expired or not valid: launch the app again from the EHR")
    return session


def csrf_checked(request: Request, session: dict[str, Any]) -> None:
    """Same-origin (Origin header, when the browser sends one) and the session's CSRF token in X-CSRF-Token."""
    origin = request.headers.get("origin")
    public = urlsplit(request.app.state.settings.smart_app.public_url or "")
    if origin is not None and (urlsplit(origin).scheme, urlsplit(origin).netloc) != (public.scheme, public.netloc):
        raise Forbidden("cross-origin request refused")
    token = request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(token, session.get("csrf", "")):
        raise Forbidden("missing or wrong X-CSRF-Token")


def authorize_dictation(request: Request, principal: Principal | None, requested: DictationContext) -> DictationContext:
    """The context a dictation may be written under: the request's, narrowed and checked by the token's."""
    if principal is None:
        return requested
    principal.require("DocumentReference", "c")
    principal.require("Patient", "r")
    if requested.encounter or principal.encounter:
        principal.require("Encounter", "r")
    fhir_base = request.app.state.settings.fhir.base_url.rstrip("/")
    forwarded = fhir_base in (a.rstrip("/") for a in principal.audiences)
    patient, encounter, author = principal.context(requested.patient or None, requested.encounter,
                                                   requested.author or None, forwarded=forwarded)
    if forwarded:
        on_behalf_of.set(principal.token)  # the token was issued for the FHIR server: act as the user there
    return requested.model_copy(update={"patient": patient, "encounter": encounter, "author": author})


def chart_readable(principal: Principal | None) -> set[str] | None:
    """The chart resource types the caller may search, for the vocabulary look-up (None: auth is off)."""
    return None if principal is None else {t for t in SOURCES if allows(principal.scopes, t, "s")}
