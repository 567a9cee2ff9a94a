"""The SMART App Launch client (EHR launch and standalone): authorization code with PKCE S256.

Only the configured FHIR server may launch the app: an ``iss`` from anywhere else would make the app hand codes
and tokens to a stranger. ``state`` (256 bits) and the PKCE verifier stay in a sealed cookie between the
redirect and the callback; the id_token must answer this login's nonce. The resulting session (tokens and launch
context) is sealed into the browser's cookie by the caller; page JavaScript never sees a token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.jwk import ECKey, RSAKey

from service.auth.errors import InvalidToken
from service.auth.oauth import Discovery, TokenRequestFailed, oauth_client, token_request
from service.auth.tokens import TokenValidator
from service.config import SmartAppSettings
from service.errors import ScribeError


class LaunchFailed(ScribeError):
    status, slug, title = 400, "launch-failed", "SMART launch failed"


class SmartAppClient:
    def __init__(self, settings: SmartAppSettings, fhir_base_url: str, validator: TokenValidator,
                 discovery: Discovery, http: httpx.AsyncClient, key: RSAKey | ECKey | None = None) -> None:
        """``http``: the client for the EHR's hosts (its style document); ``key``: for private_key_jwt."""
        self.settings = settings
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.validator = validator
        self.discovery = discovery
        self._http = http
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        self.oauth = oauth_client(settings.client_id, settings.client_auth, secret=secret, key=key)

    async def aclose(self) -> None:
        await self.oauth.aclose()

    async def begin(self, iss: str, launch: str | None, redirect_uri: str) -> tuple[str, dict[str, Any]]:
        """(URL to send the browser to, what the callback will need: to be sealed into a cookie)."""
        if iss.rstrip("/") != self.fhir_base_url:
            raise LaunchFailed("the app was launched by an unknown FHIR server (iss); only the configured EHR "
                               "(fhir.base_url) may launch it")
        try:
            config = await self.discovery.configuration(
                self.fhir_base_url, required=("authorization_endpoint", "token_endpoint"))
        except ScribeError:
            raise LaunchFailed("cannot read the EHR's .well-known/smart-configuration") from None
        if "S256" not in config.get("code_challenge_methods_supported", ["S256"]):
            raise LaunchFailed("the EHR's authorization server does not support PKCE S256")
        pending = {"state": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(32),
                   "verifier": secrets.token_urlsafe(64), "token_endpoint": config["token_endpoint"],
                   "redirect_uri": redirect_uri}
        extra = {"launch": launch} if launch else {}
        url, _ = self.oauth.create_authorization_url(
            config["authorization_endpoint"], state=pending["state"], code_verifier=pending["verifier"],
            redirect_uri=redirect_uri, scope=self.settings.scopes if launch else self.settings.standalone_scopes,
            nonce=pending["nonce"], aud=self.fhir_base_url, **extra)
        return url, pending

    async def complete(self, pending: dict[str, Any], code: str, state: str) -> dict[str, Any]:
        """Check state, exchange the code, validate what came back; the session to seal into the cookie."""
        if not hmac.compare_digest(pending.get("state", ""), state):
            raise LaunchFailed("the callback's state does not match this browser's launch")
        tokens = await self._tokens(self.oauth.fetch_token(
            pending["token_endpoint"], grant_type="authorization_code", code=code,
            redirect_uri=pending["redirect_uri"], code_verifier=pending["verifier"]), LaunchFailed)
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
        tokens = await self._tokens(self.oauth.refresh_token(session["token_endpoint"],
                                                             refresh_token=session["refresh_token"]), InvalidToken)
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

    @staticmethod
    async def _tokens(call: Any, failure: type[ScribeError]) -> dict[str, Any]:
        try:
            tokens = await token_request(call, "token endpoint")
        except TokenRequestFailed as refused:
            raise failure(f"the EHR's token endpoint refused: {refused.reason}") from None
        if not isinstance(tokens.get("access_token"), str):
            raise failure("the EHR's token endpoint answered without an access_token")
        return tokens


def _token_fields(tokens: dict[str, Any]) -> dict[str, Any]:
    expires_in = tokens.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 86_400:
        expires_in = 300  # absent or nonsense: assume a short life, the page refreshes or relaunches
    refresh = tokens.get("refresh_token")
    return {"access_token": tokens["access_token"], "refresh_token": refresh if isinstance(refresh, str) else None,
            "expires_at": time.time() + float(expires_in)}
