"""The SMART App Launch client (EHR launch and standalone): authorization code with PKCE S256.

Only the configured FHIR server may launch the app: an ``iss`` from anywhere else would make the app hand codes
and tokens to a stranger. ``state`` (256 bits) and the PKCE verifier stay in a sealed cookie between the
redirect and the callback; the id_token must answer this login's nonce. The resulting session (tokens and launch
context) is sealed into the browser's cookie by the caller; page JavaScript never sees a token.

Here fhir-scribe is the EHR's client: the access token is opaque to it whatever its shape and is only forwarded.
The launch context comes from the token response (given to this client for its own verifier) and the user from
the verified id_token; ``session_principal`` turns a session into the caller the API authorizes.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx2
from joserfc.jwk import ECKey, RSAKey

from service.auth.errors import InvalidToken
from service.auth.principal import Principal
from service.auth.scopes import parse
from service.auth.oauth import AuthServers, TokenRequestFailed, token_request
from service.auth.tokens import TokenValidator
from service.config import SmartAppSettings
from service.documents.draft import FHIR_ID
from service.errors import ScribeError


_FHIR_ID = re.compile(rf"^{FHIR_ID}$")


class LaunchFailed(ScribeError):
    status, slug, title = 400, "launch-failed", "SMART launch failed"


class SmartAppClient:
    def __init__(self, settings: SmartAppSettings, fhir_base_url: str, validator: TokenValidator,
                 servers: AuthServers, key: RSAKey | ECKey | None = None) -> None:
        """``http``: the client for the EHR's hosts (its style document); ``key``: for private_key_jwt."""
        self.settings = settings
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.validator = validator
        self.discovery = servers.discovery
        self._http = servers.http
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        self.oauth = servers.oauth_client(settings.client_id, settings.client_auth, secret=secret, key=key)

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
                   "redirect_uri": redirect_uri, "issuer": config.get("issuer"), "jwks_uri": config.get("jwks_uri"),
                   "scope": self.settings.scopes if launch else self.settings.standalone_scopes}
        extra = {"launch": launch} if launch else {}
        url, _ = self.oauth.create_authorization_url(
            config["authorization_endpoint"], state=pending["state"], code_verifier=pending["verifier"],
            redirect_uri=redirect_uri, scope=pending["scope"], nonce=pending["nonce"], aud=self.fhir_base_url, **extra)
        return url, pending

    async def complete(self, pending: dict[str, Any], code: str, state: str) -> dict[str, Any]:
        """Check state, exchange the code, validate what came back; the session to seal into the cookie."""
        if not hmac.compare_digest(pending.get("state", ""), state):
            raise LaunchFailed("the callback's state does not match this browser's launch")
        tokens = await self._tokens(self.oauth.fetch_token(
            pending["token_endpoint"], grant_type="authorization_code", code=code,
            redirect_uri=pending["redirect_uri"], code_verifier=pending["verifier"]), LaunchFailed)
        try:
            context = _launch_context(tokens)
            user = await self._user(tokens, pending["nonce"], pending)
        except InvalidToken as refused:
            raise LaunchFailed(f"the EHR's tokens are not acceptable: {refused.detail}") from None
        return {
            **_token_fields(tokens), **context, "fhir_user": user, "token_endpoint": pending["token_endpoint"],
            "issuer": pending.get("issuer"), "jwks_uri": pending.get("jwks_uri"), "nonce": pending["nonce"],
            "scope": _granted(tokens, pending["scope"]), "csrf": secrets.token_urlsafe(32),
            "max_until": time.time() + self.settings.session_max_s,  # from the launch; refreshes never move it
        }

    async def _user(self, tokens: dict[str, Any], nonce: str | None, session: dict[str, Any]) -> str | None:
        """The clinician, from the verified id_token's fhirUser (SMART 1's ``profile`` too), as Type/id."""
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            return None
        claims = await self.validator.id_token_claims(id_token, self.settings.client_id, nonce,
                                                      ehr_issuer=session.get("issuer"),
                                                      ehr_jwks_uri=session.get("jwks_uri"))
        return _reference(claims.get("fhirUser") or claims.get("profile"), ("Practitioner", "PractitionerRole",
                                                                            "Patient", "RelatedPerson", "Person"))

    async def refresh(self, session: dict[str, Any]) -> dict[str, Any]:
        """The session with a new access token from its refresh token. The launch context stays the one the
        clinician launched with: a refreshed token naming another patient or user ends the session instead."""
        if time.time() >= session.get("max_until", 0):
            raise InvalidToken("the app session has reached its maximum length: launch the app again from the EHR")
        tokens = await self._tokens(self.oauth.refresh_token(session["token_endpoint"],
                                                             refresh_token=session["refresh_token"]), InvalidToken)
        renewed = {**_launch_context(tokens), "fhir_user": await self._user(tokens, session.get("nonce"), session)}
        for key, value in renewed.items():
            if key in ("patient", "encounter", "fhir_user") and value and value != session.get(key):
                raise InvalidToken("the refreshed token is for another launch context: launch the app again")
        fields = _token_fields(tokens)
        return {**session, **fields, "refresh_token": fields["refresh_token"] or session["refresh_token"],
                "scope": _granted(tokens, session["scope"])}

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
        except (httpx2.HTTPError, ValueError):
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


def session_principal(session: dict[str, Any], fhir_base_url: str, client_id: str) -> Principal:
    """The app's caller, from its session: what the EHR's token response and id_token said at the launch (and
    each refresh). The access token itself is opaque here whatever its shape, and only ever forwarded to the EHR,
    which enforces it on every call (the audience is the FHIR server)."""
    if time.time() >= float(session.get("expires_at", 0)):
        raise InvalidToken("the app session's access token has expired: the page renews it, or launch again")
    scope = str(session.get("scope") or "")
    return Principal(issuer=str(session.get("issuer") or ""), subject=str(session.get("fhir_user") or ""),
                     client_id=client_id, scope=scope, scopes=parse(scope), patient=session.get("patient"),
                     encounter=session.get("encounter"), fhir_user=session.get("fhir_user"),
                     audiences=[fhir_base_url], token=session["access_token"])


def _launch_context(tokens: dict[str, Any]) -> dict[str, Any]:
    """SMART launch context from the token response (the EHR said it to this client, over its own channel, for
    its PKCE verifier): checked for type and shape, never trusted further than that."""
    context: dict[str, Any] = {}
    for name in ("patient", "encounter"):
        value = tokens.get(name)
        if value is not None and not (isinstance(value, str) and _FHIR_ID.match(value)):
            raise InvalidToken(f"the token response's {name} is not a FHIR id")
        context[name] = value
    banner = tokens.get("need_patient_banner", False)
    context["need_patient_banner"] = banner if isinstance(banner, bool) else False
    style = tokens.get("smart_style_url")
    context["smart_style_url"] = style if isinstance(style, str) else None
    return context


def _granted(tokens: dict[str, Any], requested: str) -> str:
    """The scopes granted (RFC 6749 s5.1: absent means as requested)."""
    scope = tokens.get("scope")
    return scope if isinstance(scope, str) else requested


def _reference(value: Any, types: tuple[str, ...]) -> str | None:
    """``https://ehr/fhir/Practitioner/123`` or ``Practitioner/123`` -> ``Practitioner/123`` (None otherwise)."""
    if not isinstance(value, str):
        return None
    parts = value.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] not in types or not _FHIR_ID.match(parts[-1]):
        return None
    return f"{parts[-2]}/{parts[-1]}"


def _token_fields(tokens: dict[str, Any]) -> dict[str, Any]:
    expires_in = tokens.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 86_400:
        expires_in = 300  # absent or nonsense: assume a short life, the page refreshes or relaunches
    refresh = tokens.get("refresh_token")
    return {"access_token": tokens["access_token"], "refresh_token": refresh if isinstance(refresh, str) else None,
            "expires_at": time.time() + float(expires_in)}
