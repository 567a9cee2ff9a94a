"""SMART Backend Services: fhir-scribe's own identity towards the FHIR server.

``client_credentials`` with a ``private_key_jwt`` assertion (RS384 for RSA keys, ES384 for P-384 keys; the
assertion itself is made by service/auth/oauth.py on Authlib). The access token is cached until a minute before it
expires, and one refresh at a time is made however many requests need it. The public half of the key is served at
/.well-known/jwks.json.
"""

from __future__ import annotations

import asyncio
import logging
import time

from joserfc.jwk import ECKey, RSAKey

from service.auth.oauth import AuthServers, TokenRequestFailed, load_private_key, token_request
from service.config import BackendServicesSettings
from service.errors import ScribeError
from service.logs import event

log = logging.getLogger(__name__)
_REFRESH_MARGIN_S = 60


class BackendAuthFailed(ScribeError):
    status, slug, title = 502, "backend-auth-failed", "fhir-scribe could not obtain its own access token"


def load_key(settings: BackendServicesSettings) -> RSAKey | ECKey:
    return load_private_key(settings.private_key_path, settings.kid, "SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH")


class BackendServices:
    def __init__(self, settings: BackendServicesSettings, fhir_base_url: str, servers: AuthServers) -> None:
        self.settings = settings
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.key = load_key(settings)
        self.discovery = servers.discovery
        self.oauth = servers.oauth_client(settings.client_id, "private_key_jwt", key=self.key)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.time() >= self._expires_at - _REFRESH_MARGIN_S:
                await self._refresh()
            assert self._token is not None
            return self._token

    async def _refresh(self) -> None:
        try:
            token_url = self.settings.token_url or (await self.discovery.configuration(
                self.fhir_base_url, required=("token_endpoint",)))["token_endpoint"]
        except ScribeError:
            raise BackendAuthFailed(f"cannot discover the token endpoint of {self.fhir_base_url}") from None
        try:
            body = await token_request(self.oauth.fetch_token(token_url, grant_type="client_credentials",
                                                              scope=self.settings.scope), "token endpoint")
        except TokenRequestFailed as refused:
            event(log, "auth.backend_token_refused", level=logging.WARNING, error=refused.error)
            raise BackendAuthFailed(f"the token endpoint refused fhir-scribe's credentials: {refused.reason}") from None
        if not isinstance(body.get("access_token"), str):
            raise BackendAuthFailed("the token endpoint answered without an access_token")
        expires_in = body.get("expires_in")
        self._token = body["access_token"]
        self._expires_at = time.time() + (float(expires_in) if isinstance(expires_in, (int, float)) else 300.0)
        event(log, "auth.backend_token", expires_in=expires_in, scope=body.get("scope"))
