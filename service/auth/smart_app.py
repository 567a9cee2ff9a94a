"""The SMART App Launch client (EHR launch and standalone): authorization code with PKCE S256.

Only the configured FHIR server may launch the app: an ``iss`` from anywhere else would make the app hand codes
and tokens to a stranger. ``state`` (256 bits) and the PKCE verifier stay in a sealed cookie between the
redirect and the callback; the id_token must answer this login's nonce. The resulting session (tokens and launch
context) is sealed into the browser's cookie by the caller; page JavaScript never sees a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from service.auth.errors import InvalidToken
from service.auth.tokens import TokenValidator
from service.config import SmartAppSettings
from service.errors import ScribeError


class LaunchFailed(ScribeError):
    status, slug, title = 400, "launch-failed", "SMART launch failed"


class SmartAppClient:
    def __init__(self, settings: SmartAppSettings, fhir_base_url: str, validator: TokenValidator,
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.validator = validator
        self._http = http or httpx.AsyncClient(timeout=15)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def begin(self, iss: str, launch: str | None, redirect_uri: str) -> tuple[str, dict[str, Any]]:
        """(URL to send the browser to, what the callback will need: to be sealed into a cookie)."""
        if iss.rstrip("/") != self.fhir_base_url:
            raise LaunchFailed("the app was launched by an unknown FHIR server (iss); only the configured EHR "
                               "(fhir.base_url) may launch it")
        config = await self._smart_configuration()
        if "S256" not in config.get("code_challenge_methods_supported", ["S256"]):
            raise LaunchFailed("the EHR's authorization server does not support PKCE S256")
        verifier = secrets.token_urlsafe(64)
        pending = {"state": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(32), "verifier": verifier,
                   "token_endpoint": config["token_endpoint"], "redirect_uri": redirect_uri}
        params = {
            "response_type": "code", "client_id": self.settings.client_id, "redirect_uri": redirect_uri,
            "scope": self.settings.scopes if launch else self.settings.standalone_scopes,
            "state": pending["state"], "nonce": pending["nonce"], "aud": self.fhir_base_url,
            "code_challenge": _challenge(verifier), "code_challenge_method": "S256",
        }
        if launch:
            params["launch"] = launch
        return f"{config['authorization_endpoint']}?{urlencode(params)}", pending

    async def complete(self, pending: dict[str, Any], code: str, state: str) -> dict[str, Any]:
        """Check state, exchange the code, validate what came back; the session to seal into the cookie."""
        if not hmac.compare_digest(pending.get("state", ""), state):
            raise LaunchFailed("the callback's state does not match this browser's launch")
        tokens = await self._token_request(pending["token_endpoint"], {
            "grant_type": "authorization_code", "code": code, "redirect_uri": pending["redirect_uri"],
            "client_id": self.settings.client_id, "code_verifier": pending["verifier"]}, LaunchFailed)
        try:
            principal = await self.validator.principal(f"Bearer {tokens['access_token']}")
            identity = await self.validator.id_token_claims(tokens.get("id_token", ""), self.settings.client_id,
                                                            pending["nonce"]) if tokens.get("id_token") else {}
        except InvalidToken as refused:
            raise LaunchFailed(f"the EHR's tokens are not acceptable: {refused.detail}") from None
        fhir_user = principal.fhir_user or identity.get("fhirUser")
        return {
            **_token_fields(tokens), "token_endpoint": pending["token_endpoint"],
            "patient": tokens.get("patient") or principal.patient, "encounter": tokens.get("encounter") or principal.encounter,
            "fhir_user": fhir_user, "scope": tokens.get("scope", ""),
            "need_patient_banner": bool(tokens.get("need_patient_banner", False)),
            "smart_style_url": tokens.get("smart_style_url"), "csrf": secrets.token_urlsafe(32),
            "max_until": time.time() + self.settings.session_max_s,  # from the launch; refreshes never move it
        }

    async def refresh(self, session: dict[str, Any]) -> dict[str, Any]:
        """The session with a new access token from its refresh token. The launch context stays the one the
        clinician launched with: a refreshed token naming another patient or user ends the session instead."""
        if time.time() >= session.get("max_until", 0):
            raise InvalidToken("the app session has reached its maximum length: launch the app again from the EHR")
        tokens = await self._token_request(session["token_endpoint"], {
            "grant_type": "refresh_token", "refresh_token": session["refresh_token"],
            "client_id": self.settings.client_id}, InvalidToken)
        principal = await self.validator.principal(f"Bearer {tokens['access_token']}")
        for key, value in (("patient", tokens.get("patient") or principal.patient),
                           ("encounter", tokens.get("encounter") or principal.encounter),
                           ("fhir_user", principal.fhir_user)):
            if value and session.get(key) and value != session[key]:
                raise InvalidToken("the refreshed token is for another launch context: launch the app again")
        return {**session, **_token_fields(tokens), "refresh_token": tokens.get("refresh_token")
                or session["refresh_token"], "scope": tokens.get("scope", session["scope"])}

    async def style(self, session: dict[str, Any]) -> Any:
        """The launch's SMART style document, or None. Fetched only from the EHR's own hosts (its FHIR server's
        or its token endpoint's), in a short time: the page must not wait on it or be pointed elsewhere."""
        url = session.get("smart_style_url")
        hosts = {urlsplit(self.fhir_base_url).netloc, urlsplit(session.get("token_endpoint", "")).netloc}
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or urlsplit(url).netloc not in hosts:
            return None
        try:
            response = await self._http.get(url, timeout=2)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def _token_request(self, endpoint: str, form: dict[str, str],
                             failure: type[ScribeError]) -> dict[str, Any]:
        try:
            response = await self._http.post(endpoint, data=form)
            tokens = response.json()
        except (httpx.HTTPError, ValueError):
            raise failure("the EHR's token endpoint did not answer") from None
        if response.status_code != 200 or not isinstance(tokens, dict) or "access_token" not in tokens:
            error = tokens.get("error_description") or tokens.get("error") if isinstance(tokens, dict) else None
            raise failure(f"the EHR's token endpoint refused: {error or response.status_code}")
        return tokens

    async def _smart_configuration(self) -> dict[str, Any]:
        try:
            response = await self._http.get(f"{self.fhir_base_url}/.well-known/smart-configuration")
            config = response.json()
            config["authorization_endpoint"], config["token_endpoint"]  # noqa: B018 (both required)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            raise LaunchFailed("cannot read the EHR's .well-known/smart-configuration") from None
        return config


def _token_fields(tokens: dict[str, Any]) -> dict[str, Any]:
    return {"access_token": tokens["access_token"], "refresh_token": tokens.get("refresh_token"),
            "expires_at": time.time() + float(tokens.get("expires_in", 300))}


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
