"""fhir-scribe as an OAuth client of the EHR's authorization server, on Authlib.

Three registrations may exist with the EHR: the SMART app (public with PKCE, or confidential with a secret or a
key), Backend Services (private_key_jwt), and the caller of the introspection endpoint. Each gets one Authlib
``AsyncOAuth2Client``; the PKCE, client authentication and token-response handling are Authlib's. All of them, and
every other request to the authorization servers (discovery, JWKS, the EHR's style document), share one HTTP
connection pool (``AuthServers``), closed once at shutdown. What is SMART's own stays here: the ``kid``/``typ`` header and the 5-minute
lifetime of a client assertion, and the discovery of the EHR's endpoints (one place, cached with a TTL).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import ECKey, RSAKey

from service.config import ClientAuthMethod, ConfigError
from service.errors import ScribeError

ASSERTION_LIFETIME_S = 240  # SMART: exp no more than 5 minutes ahead
_DISCOVERY_TTL_S = 300.0
_TIMEOUT_S = 15.0


class DiscoveryFailed(ScribeError):
    status, slug, title = 502, "discovery-failed", "The EHR's authorization server could not be discovered"


class TokenRequestFailed(ScribeError):
    """The token or introspection endpoint refused, or did not answer. ``error`` is its OAuth error code."""

    status, slug, title = 502, "token-request-failed", "The EHR's token endpoint refused"

    def __init__(self, detail: str, error: str | None = None, description: str | None = None) -> None:
        super().__init__(detail)
        self.error = error
        self.description = description

    @property
    def reason(self) -> str:
        """The EHR's own words for the refusal (its error_description, else its error code), or the detail."""
        return self.description or self.error or self.detail


def load_private_key(path: Path, kid: str | None, setting: str) -> RSAKey | ECKey:
    """A PEM private key for private_key_jwt: RSA (RS384) or EC P-384 (ES384), kid = its RFC 7638 thumbprint
    unless configured. A bad file stops start-up with the setting's name."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    for kind, alg in ((RSAKey, "RS384"), (ECKey, "ES384")):
        try:
            key = kind.import_key(pem)
        except Exception:  # joserfc raises several kinds for "not this key type"
            continue
        if kind is ECKey and key.curve_name != "P-384":
            raise ConfigError(f"{setting}: EC keys must be P-384 (ES384)")
        if not key.is_private:
            raise ConfigError(f"{setting}: the PEM holds no private key")
        return kind.import_key(pem, parameters={"kid": kid or key.thumbprint(), "alg": alg, "use": "sig"})
    raise ConfigError(f"{setting}: not an RSA or EC P-384 private key (PEM)")


class _SmartPrivateKeyJWT(PrivateKeyJWT):
    """private_key_jwt as SMART wants it: ``kid`` and ``typ: JWT`` in the header, exp 4 minutes ahead, a fresh
    jti each time (Authlib makes the jti)."""

    def __init__(self, key: RSAKey | ECKey) -> None:
        super().__init__(alg=key.alg)
        self.key = key

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return private_key_jwt_sign(self.key, client_id=auth.client_id, token_endpoint=token_endpoint,
                                    alg=self.key.alg, header={"kid": self.key.kid, "typ": "JWT"},
                                    expires_in=ASSERTION_LIFETIME_S)


class AuthServers:
    """The authorization servers as one upstream: one connection pool (an httpx2 transport, Authlib's HTTP
    library) for plain requests (``http``), the endpoint discovery and every registration's OAuth client."""

    def __init__(self, timeout_s: float = _TIMEOUT_S) -> None:
        self._transport = httpx2.AsyncHTTPTransport()
        self.timeout_s = timeout_s
        self.http = httpx2.AsyncClient(timeout=timeout_s, transport=self._transport)
        self.discovery = Discovery(self.http)

    def oauth_client(self, client_id: str, method: ClientAuthMethod = "none", *, secret: str | None = None,
                     key: RSAKey | ECKey | None = None) -> AsyncOAuth2Client:
        """One registration's client. ``secret`` for client_secret_basic/post, ``key`` for private_key_jwt."""
        return _oauth_client(client_id, method, secret, key, self._transport, self.timeout_s)

    async def aclose(self) -> None:
        await self.http.aclose()  # and with it the transport the OAuth clients share

    async def __aenter__(self) -> "AuthServers":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def _oauth_client(client_id: str, method: ClientAuthMethod, secret: str | None, key: RSAKey | ECKey | None,
                  transport: httpx2.AsyncHTTPTransport, timeout_s: float) -> AsyncOAuth2Client:
    # Introspection authenticates like the token endpoint (Authlib reads revocation_endpoint_auth_method there).
    client = AsyncOAuth2Client(client_id=client_id, client_secret=secret if key is None else "unused",
                               token_endpoint_auth_method=method, revocation_endpoint_auth_method=method,
                               code_challenge_method="S256", timeout=timeout_s, transport=transport)
    if method == "private_key_jwt":
        if key is None:
            raise ValueError("private_key_jwt needs a key")
        client.register_client_auth_method(_SmartPrivateKeyJWT(key))
    return client


async def token_request(call: Any, what: str) -> dict[str, Any]:
    """Await an Authlib token/introspection call; every failure becomes TokenRequestFailed, in words a person
    can act on (the EHR's OAuth error code and description, never a stack trace)."""
    try:
        answer = await call
        if isinstance(answer, httpx2.Response):  # introspection: Authlib hands back the response itself
            if answer.status_code != 200:
                raise TokenRequestFailed(f"the EHR's {what} answered HTTP {answer.status_code}")
            answer = answer.json()
    except OAuthError as refused:
        description = f" ({refused.description})" if refused.description else ""
        raise TokenRequestFailed(f"the EHR's {what} refused: {refused.error}{description}",
                                 error=refused.error, description=refused.description) from None
    except (httpx2.HTTPError, ValueError) as exc:
        raise TokenRequestFailed(f"the EHR's {what} did not answer usably ({type(exc).__name__})") from None
    if not isinstance(answer, dict):
        raise TokenRequestFailed(f"the EHR's {what} answered something that is not a JSON object")
    return dict(answer)


class Discovery:
    """``{base}/.well-known/smart-configuration`` (else ``openid-configuration``), cached per base URL for a
    while: every launch, token refresh and key look-up needs it, and an EHR moves its endpoints rarely."""

    def __init__(self, http: httpx2.AsyncClient, ttl_s: float = _DISCOVERY_TTL_S) -> None:
        self._http = http
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def configuration(self, base: str, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
        base = base.rstrip("/")
        async with self._lock:
            cached = self._cache.get(base)
            if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
                return cached[1]
            for path in ("/.well-known/smart-configuration", "/.well-known/openid-configuration"):
                try:
                    response = await self._http.get(base + path, headers={"Accept": "application/json"})
                    config = response.json() if response.status_code == 200 else None
                except (httpx2.HTTPError, ValueError):
                    config = None
                if isinstance(config, dict) and all(isinstance(config.get(k), str) for k in required):
                    self._cache[base] = (time.monotonic(), config)
                    return config
        missing = f" with {', '.join(required)}" if required else ""
        raise DiscoveryFailed(f"cannot read {base}/.well-known/smart-configuration{missing}")
