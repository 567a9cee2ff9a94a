"""SMART App Launch routes: /smart/launch -> EHR's authorize -> /smart/callback -> session cookie -> /app/.

Thin: the launch logic is service/auth/smart_app.py, the sealing service/auth/session.py."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from service.api.deps import get_cookies, get_fhir, get_settings, get_smart_app
from service.api.security import SESSION_COOKIE, csrf_checked, open_session
from service.auth.errors import InvalidToken
from service.auth.session import SealedCookies
from service.auth.smart_app import LaunchFailed, SmartAppClient
from service.config import Settings
from service.fhir.client import FhirClient, on_behalf_of
from service.web.style import stylesheet

router = APIRouter(tags=["SMART app"])
LAUNCH_COOKIE = "scribe_launch"
# RFC 6749 s4.1.2.1 authorization error codes (and OpenID Connect's): the only EHR text the answer repeats.
_OAUTH_ERRORS = {"invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type",
                 "invalid_scope", "server_error", "temporarily_unavailable", "interaction_required", "login_required",
                 "account_selection_required", "consent_required", "invalid_request_uri",
                 "invalid_request_object", "request_not_supported", "request_uri_not_supported",
                 "registration_not_supported"}


def _redirect_uri(settings: Settings) -> str:
    """From settings only (see SmartAppSettings.public_url), never from the request's Host header."""
    return f"{settings.smart_app.public_url}/smart/callback"


def _cookie(response: Response, name: str, value: str, max_age: int, path: str = "/") -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, secure=True, samesite="lax")


_App = Depends(get_smart_app)  # 404 app-off when the app is not configured
_Settings = Depends(get_settings)
_Cookies = Depends(get_cookies)


@router.get("/smart/launch", summary="SMART launch URL (EHR launch with iss + launch; standalone with iss)")
async def launch(iss: str, launch: str | None = None, smart_app: SmartAppClient = _App,
                 cookies: SealedCookies = _Cookies, settings: Settings = _Settings) -> RedirectResponse:
    authorize_url, pending = await smart_app.begin(iss, launch, _redirect_uri(settings))
    ttl = settings.smart_app.launch_timeout_s
    response = RedirectResponse(authorize_url, status_code=302)
    _cookie(response, LAUNCH_COOKIE, cookies.seal("launch", pending, ttl), ttl, path="/smart/callback")
    return response


@router.get("/smart/callback", summary="SMART redirect URI")
async def callback(request: Request, code: str | None = None, state: str | None = None, error: str | None = None,
                   error_description: str | None = None, smart_app: SmartAppClient = _App,
                   cookies: SealedCookies = _Cookies) -> RedirectResponse:
    if error:  # the EHR's words are not echoed (they arrive in the URL: anyone can write them); known codes are
        code = error if error in _OAUTH_ERRORS else "an error"
        raise LaunchFailed(f"the EHR did not authorize the app ({code})")
    pending = cookies.open("launch", request.cookies.get(LAUNCH_COOKIE))
    if pending is None:
        raise LaunchFailed("no launch in progress in this browser (expired, or started elsewhere)")
    if not code or not state:
        raise LaunchFailed("the callback lacks code or state")
    session = await smart_app.complete(pending, code, state)
    response = RedirectResponse("/app/", status_code=303)
    _session_cookie(cookies, response, session)
    response.delete_cookie(LAUNCH_COOKIE, path="/smart/callback")
    return response


def _session_cookie(cookies: SealedCookies, response: Response, session: dict) -> None:
    """With a refresh token the session may last a shift (the page refreshes each access token before it
    expires), counted from the launch: refreshing never extends it. Without one it ends with its access token."""
    now = time.time()
    ends = session["max_until"] if session.get("refresh_token") else min(session["expires_at"], session["max_until"])
    ttl = int(ends - now)
    _cookie(response, SESSION_COOKIE, cookies.seal("session", session, max(ttl, 1)), max(ttl, 1))


@router.post("/smart/refresh", summary="Renew the session's access token with its refresh token")
async def refresh(request: Request, smart_app: SmartAppClient = _App, cookies: SealedCookies = _Cookies,
                  settings: Settings = _Settings) -> JSONResponse:
    session = open_session(request, cookies)
    csrf_checked(request, session, settings)
    if not session.get("refresh_token"):
        raise InvalidToken("the EHR granted no refresh token (scope online_access): launch the app again")
    renewed = await smart_app.refresh(session)
    response = JSONResponse({"expires_at": renewed["expires_at"]}, headers={"Cache-Control": "no-store"})
    _session_cookie(cookies, response, renewed)
    return response


@router.get("/smart/style.css", summary="The EHR's SMART style (smart_style_url) as CSS variables for the page")
async def style(request: Request, smart_app: SmartAppClient = _App, cookies: SealedCookies = _Cookies) -> Response:
    session = cookies.open("session", request.cookies.get(SESSION_COOKIE)) or {}
    return Response(stylesheet(await smart_app.style(session)), media_type="text/css",
                    headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@router.get("/smart/session", summary="The launch context for the page (no tokens)")
async def session(request: Request, cookies: SealedCookies | None = _Cookies,
                  settings: Settings = _Settings) -> JSONResponse:
    data = open_session(request, cookies)
    return JSONResponse({k: data.get(k) for k in ("patient", "encounter", "fhir_user", "need_patient_banner",
                                                   "smart_style_url", "csrf", "expires_at")}
                        | {"refreshable": bool(data.get("refresh_token")), "iss": settings.fhir.base_url},
                        headers={"Cache-Control": "no-store"})


@router.get("/smart/context", summary="Patient banner and encounter, read from the EHR as the user")
async def context(request: Request, cookies: SealedCookies | None = _Cookies,
                  client: FhirClient = Depends(get_fhir)) -> JSONResponse:
    data = open_session(request, cookies)
    on_behalf_of.set(data["access_token"])  # the EHR decides what this user may see
    patient = await client.read("Patient", data["patient"]) if data.get("patient") else None
    encounter = await client.read("Encounter", data["encounter"]) if data.get("encounter") else None
    name = ((patient or {}).get("name") or [{}])[0]
    banner = {
        "patient_name": " ".join([*name.get("given", []), name.get("family", "")]).strip() or None,
        "birth_date": (patient or {}).get("birthDate"),
        "identifier": (((patient or {}).get("identifier") or [{}])[0]).get("value"),
        "encounter": " ".join(filter(None, [((encounter or {}).get("class") or {}).get("display"),
                                            (encounter or {}).get("status")])) or None,
    }
    return JSONResponse(banner, headers={"Cache-Control": "no-store"})


@router.post("/smart/logout", summary="End the app session")
async def logout(request: Request, cookies: SealedCookies | None = _Cookies,
                 settings: Settings = _Settings) -> Response:
    csrf_checked(request, open_session(request, cookies), settings)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
