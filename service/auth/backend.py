"""SMART Backend Services: fhir-scribe's own identity towards the FHIR server.

``client_credentials`` with a ``private_key_jwt`` assertion (RS384 for RSA keys, ES384 for P-384 keys; ``kid``
and ``typ: JWT`` in the header; iss = sub = client_id; aud = the token URL; exp 5 minutes ahead at most; a
fresh ``jti`` every time). The access token is cached until a minute before it expires, and one refresh at a
time is made however many requests need it. The public half of the key is served at /.well-known/jwks.json.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.config import BackendServicesSettings, ConfigError
from service.errors import ScribeError
from service.logs import event

log = logging.getLogger(__name__)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME_S = 240
_REFRESH_MARGIN_S = 60


class BackendAuthFailed(ScribeError):
    status, slug, title = 502, "backend-auth-failed", "fhir-scribe could not obtain its own access token"


def load_key(settings: BackendServicesSettings) -> RSAKey | ECKey:
    try:
        pem = settings.private_key_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH: cannot read "
                          f"{settings.private_key_path}: {exc.strerror}") from None
    for kind, alg in ((RSAKey, "RS384"), (ECKey, "ES384")):
        try:
            key = kind.import_key(pem)
        except Exception:  # joserfc raises several kinds for "not this key type"
            continue
        if kind is ECKey and key.curve_name != "P-384":
            raise ConfigError("SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH: EC keys must be P-384 (ES384)")
        if not key.is_private:
            raise ConfigError("SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH: the PEM holds no private key")
        kid = settings.kid or key.thumbprint()
        return kind.import_key(pem, parameters={"kid": kid, "alg": alg, "use": "sig"})
    raise ConfigError("SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH: not an RSA or EC P-384 private key (PEM)")


class BackendServices:
    def __init__(self, settings: BackendServicesSettings, fhir_base_url: str, http: httpx.AsyncClient | None = None):
        self.settings = settings
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.key = load_key(settings)
        self._http = http or httpx.AsyncClient(timeout=15)
        self._token: str | None = None
        self._expires_at = 0.0
        self._token_url = settings.token_url
        self._lock = asyncio.Lock()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.time() >= self._expires_at - _REFRESH_MARGIN_S:
                await self._refresh()
            assert self._token is not None
            return self._token

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _refresh(self) -> None:
        token_url = self._token_url or await self._discover()
        now = int(time.time())
        assertion = jwt.encode(
            {"alg": self.key.alg, "kid": self.key.kid, "typ": "JWT"},
            {"iss": self.settings.client_id, "sub": self.settings.client_id, "aud": token_url,
             "iat": now, "exp": now + _ASSERTION_LIFETIME_S, "jti": uuid.uuid4().hex},
            self.key, algorithms=[self.key.alg])
        try:
            response = await self._http.post(token_url, data={
                "grant_type": "client_credentials", "scope": self.settings.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        except httpx.HTTPError as exc:
            raise BackendAuthFailed(f"cannot reach the token endpoint ({type(exc).__name__})") from None
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            event(log, "auth.backend_token_refused", level=logging.WARNING, status=response.status_code)
            raise BackendAuthFailed(f"the token endpoint refused fhir-scribe's credentials: {reason}")
        self._token = body["access_token"]
        self._expires_at = time.time() + float(body.get("expires_in", 300))
        event(log, "auth.backend_token", expires_in=body.get("expires_in"), scope=body.get("scope"))

    async def _discover(self) -> str:
        try:
            response = await self._http.get(f"{self.fhir_base_url}/.well-known/smart-configuration")
            self._token_url = response.json()["token_endpoint"]
        except (httpx.HTTPError, ValueError, KeyError):
            raise BackendAuthFailed(f"cannot discover the token endpoint of {self.fhir_base_url}") from None
        return self._token_url


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
        return body if isinstance(body, dict) else {}
    except ValueError:
        return {}
