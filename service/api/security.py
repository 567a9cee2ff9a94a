"""Authorization as FastAPI dependencies: every /v1 route needs a valid token from a trusted issuer; dictation
routes also need the right scopes and the token's launch context. Refusals happen before anything reaches the
FHIR server."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends
from starlette.requests import HTTPConnection

from service.api.deps import get_cookies, get_settings, get_tokens
from service.auth.errors import Forbidden, InvalidToken, MalformedAuthorization
from service.auth.principal import Principal
from service.auth.scopes import allows
from service.auth.session import SealedCookies
from service.auth.smart_app import session_principal
from service.auth.tokens import TokenValidator
from service.config import Settings
from service.documents.draft import DictationContext
from service.fhir.client import on_behalf_of
from service.vocabulary.models import SOURCES


SESSION_COOKIE = "scribe_session"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


async def authenticated(connection: HTTPConnection, validator: TokenValidator | None = Depends(get_tokens),
                        settings: Settings = Depends(get_settings),
                        cookies: SealedCookies | None = Depends(get_cookies)) -> Principal | None:
    """The caller's Principal, for HTTP routes and live streams alike; None only when auth is disabled (local
    demo). A bearer header (API clients), or the SMART app's session cookie (the page). With the cookie, a
    state-changing request also needs the CSRF token; a WebSocket cannot carry that header, so its Origin (which
    a browser always sends on one) must be the app's own."""
    if validator is None:
        return None
    offered = connection.headers.getlist("authorization")
    if len(offered) > 1:
        raise MalformedAuthorization("the request has more than one Authorization header; send exactly one")
    if offered or SESSION_COOKIE not in connection.cookies:
        principal = await validator.principal(offered[0] if offered else None)
    else:
        session = open_session(connection, cookies)
        if connection.scope["type"] == "websocket":
            if not _same_origin(settings, connection.headers.get("origin")):
                raise Forbidden("cross-origin stream refused: the app's session opens streams from the app's own "
                                "page only")
        elif connection.scope["method"] not in _SAFE_METHODS:
            csrf_checked(connection, session, settings)
        principal = session_principal(session, settings.fhir.base_url, settings.smart_app.client_id)
    connection.state.principal = principal
    return principal


def stream_patient(settings: Settings, principal: Principal | None, requested: str | None) -> str | None:
    """Whose chart vocabulary a stream listens with: the token's patient, or one the request names when the EHR
    itself checks this user's access (the token is for the FHIR server). None: no chart vocabulary."""
    if principal is None:
        return requested
    forwarded = _for_the_fhir_server(settings, principal)
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


def open_session(connection: HTTPConnection, cookies: SealedCookies | None) -> dict[str, Any]:
    session = cookies.open("session", connection.cookies.get(SESSION_COOKIE)) if cookies else None
    if session is None:
        raise InvalidToken("the app session is missing, expired or not valid: launch the app again from the EHR")
    return session


def csrf_checked(connection: HTTPConnection, session: dict[str, Any], settings: Settings) -> None:
    """Same-origin (Origin header, when the browser sends one) and the session's CSRF token in X-CSRF-Token."""
    origin = connection.headers.get("origin")
    if origin is not None and not _same_origin(settings, origin):
        raise Forbidden("cross-origin request refused")
    token = connection.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(token, session.get("csrf", "")):
        raise Forbidden("missing or wrong X-CSRF-Token")


def _same_origin(settings: Settings, origin: str | None) -> bool:
    public = urlsplit(settings.smart_app.public_url or "")
    return origin is not None and (urlsplit(origin).scheme, urlsplit(origin).netloc) == (public.scheme, public.netloc)


def _for_the_fhir_server(settings: Settings, principal: Principal) -> bool:
    """The token was issued for the FHIR server itself (aud): fhir-scribe may act as the user there."""
    fhir_base = settings.fhir.base_url.rstrip("/")
    return fhir_base in (a.rstrip("/") for a in principal.audiences)


def authorize_dictation(settings: Settings, principal: Principal | None,
                        requested: DictationContext) -> DictationContext:
    """The context a dictation may be written under: the request's, narrowed and checked by the token's."""
    if principal is None:
        return requested
    principal.require("DocumentReference", "c")
    principal.require("Patient", "r")
    if requested.encounter or principal.encounter:
        principal.require("Encounter", "r")
    forwarded = _for_the_fhir_server(settings, principal)
    patient, encounter, author = principal.context(requested.patient or None, requested.encounter,
                                                   requested.author or None, forwarded=forwarded)
    if forwarded:
        on_behalf_of.set(principal.token)  # the token was issued for the FHIR server: act as the user there
    return requested.model_copy(update={"patient": patient, "encounter": encounter, "author": author})


def chart_readable(principal: Principal | None) -> set[str] | None:
    """The chart resource types the caller may search, for the vocabulary look-up (None: auth is off)."""
    return None if principal is None else {t for t in SOURCES if allows(principal.scopes, t, "s")}
