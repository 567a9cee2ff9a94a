"""Authorization as FastAPI dependencies: every /v1 route needs a valid token from a trusted issuer; dictation
routes also need the right scopes and the token's launch context. Refusals happen before anything reaches the
FHIR server."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.requests import HTTPConnection

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


async def stream_principal(connection: HTTPConnection) -> Principal | None:
    """A live stream's caller: a bearer token as on every /v1 route, or the app's session cookie. A browser cannot
    put a CSRF header on a WebSocket, so with the cookie the Origin must be the app's own (it always is sent)."""
    validator = connection.app.state.tokens
    if validator is None:
        return None
    offered = connection.headers.getlist("authorization")
    if len(offered) > 1:
        raise MalformedAuthorization("the request has more than one Authorization header; send exactly one")
    if offered or SESSION_COOKIE not in connection.cookies:
        principal = await validator.principal(offered[0] if offered else None)
    else:
        session = open_session(connection)
        if not _same_origin(connection, connection.headers.get("origin")):
            raise Forbidden("cross-origin stream refused: the app's session opens streams from the app's own page "
                            "only")
        settings = connection.app.state.settings
        principal = session_principal(session, settings.fhir.base_url, settings.smart_app.client_id)
    connection.state.principal = principal
    return principal


def stream_patient(connection: HTTPConnection, principal: Principal | None, requested: str | None) -> str | None:
    """Whose chart vocabulary a stream listens with: the token's patient, or one the request names when the EHR
    itself checks this user's access (the token is for the FHIR server). None: no chart vocabulary."""
    if principal is None:
        return requested
    fhir_base = connection.app.state.settings.fhir.base_url.rstrip("/")
    forwarded = fhir_base in (a.rstrip("/") for a in principal.audiences)
    if forwarded:
        on_behalf_of.set(principal.token)  # the chart is read as this user, and the EHR enforces it
    if principal.patient:
        if requested and requested != principal.patient:
            raise Forbidden("the request's patient is not the token's patient")
        return principal.patient
    if requested and not forwarded:
        raise Forbidden("the token has no patient in its launch context and is not issued for the FHIR server "
                        "(aud), so fhir-scribe will not read a patient's chart for it")
    return requested or None


def open_session(request: HTTPConnection) -> dict[str, Any]:
    cookies = request.app.state.smart_app[1] if request.app.state.smart_app else None
    session = cookies.open("session", request.cookies.get(SESSION_COOKIE)) if cookies else None
    if session is None:
        raise InvalidToken("the app session is missing, expired or not valid: launch the app again from the EHR")
    return session


def csrf_checked(request: Request, session: dict[str, Any]) -> None:
    """Same-origin (Origin header, when the browser sends one) and the session's CSRF token in X-CSRF-Token."""
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(request, origin):
        raise Forbidden("cross-origin request refused")
    token = request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(token, session.get("csrf", "")):
        raise Forbidden("missing or wrong X-CSRF-Token")


def _same_origin(connection: HTTPConnection, origin: str | None) -> bool:
    public = urlsplit(connection.app.state.settings.smart_app.public_url or "")
    return origin is not None and (urlsplit(origin).scheme, urlsplit(origin).netloc) == (public.scheme, public.netloc)


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
