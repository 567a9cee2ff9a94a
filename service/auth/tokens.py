"""Inbound access tokens -> a Principal, or a precise refusal.

JWTs are verified against the issuer's JWKS (discovered, cached, refetched once on an unknown kid at most every
``jwks_min_refresh_s``), with algorithms pinned to the configured asymmetric ones: ``none`` and HMAC keyed with
a public key cannot pass. ``iss`` picks the trusted issuer; ``aud``, ``exp``, ``nbf`` are checked with a small
leeway. Opaque tokens go to the issuer's RFC 7662 introspection endpoint. Nothing about a token reaches the logs
but its issuer and the reason it was refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from base64 import urlsafe_b64decode
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from service.auth.errors import InvalidToken
from service.auth.principal import Principal
from service.auth.scopes import parse
from service.config import AuthSettings, IssuerSettings
from service.logs import event

log = logging.getLogger(__name__)


class _Issuer:
    def __init__(self, config: IssuerSettings, http: httpx.AsyncClient, min_refresh_s: float) -> None:
        self.config = config
        self._http = http
        self._min_refresh_s = min_refresh_s
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def keys(self, kid: str | None) -> KeySet:
        async with self._lock:
            stale = self._keys is None or (kid is not None and not _has_kid(self._keys, kid))
            if stale and (self._keys is None or time.monotonic() - self._fetched_at >= self._min_refresh_s):
                self._keys = KeySet.import_key_set(await self._fetch_jwks())
                self._fetched_at = time.monotonic()
                event(log, "auth.jwks_fetched", issuer=self.config.issuer, keys=len(self._keys.keys))
            assert self._keys is not None
            return self._keys

    async def _fetch_jwks(self) -> dict[str, Any]:
        url = self.config.jwks_url or await self._discover_jwks_url()
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidToken(f"cannot fetch the signing keys of {self.config.issuer} ({type(exc).__name__})") from None

    async def _discover_jwks_url(self) -> str:
        base = self.config.issuer.rstrip("/")
        for path in ("/.well-known/smart-configuration", "/.well-known/openid-configuration"):
            try:
                response = await self._http.get(base + path)
                if response.status_code == 200 and response.json().get("jwks_uri"):
                    return response.json()["jwks_uri"]
            except (httpx.HTTPError, ValueError):
                continue
        raise InvalidToken(f"cannot discover the signing keys of {self.config.issuer}")


class TokenValidator:
    def __init__(self, settings: AuthSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=10)
        self._issuers = {i.issuer.rstrip("/"): _Issuer(i, self._http, settings.jwks_min_refresh_s)
                         for i in settings.issuers}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise InvalidToken("send Authorization: Bearer <access token>", error=None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header is not 'Bearer <token>'", error="invalid_request")
        token = token.strip()
        if token.count(".") == 2:
            return await self._from_jwt(token)
        return await self._from_introspection(token)

    async def _from_jwt(self, token: str) -> Principal:
        header, unverified = _peek(token)
        issuer = self._issuers.get(str(unverified.get("iss", "")).rstrip("/"))
        if issuer is None:
            raise self._refuse("the token's issuer is not trusted")
        if header.get("alg") not in self.settings.algorithms:
            raise self._refuse(f"signing algorithm '{header.get('alg')}' is not accepted")
        keys = await issuer.keys(header.get("kid"))
        try:
            verified = jwt.decode(token, keys, algorithms=list(self.settings.algorithms))
        except JoseError as exc:
            raise self._refuse(f"signature check failed ({exc.error})") from None
        claims = verified.claims
        self._check_claims(claims, issuer.config)
        return _principal(claims, token, issuer.config)

    def _check_claims(self, claims: dict[str, Any], issuer: IssuerSettings) -> None:
        registry = JWTClaimsRegistry(leeway=self.settings.leeway_s, exp={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise self._refuse(_claim_problem(exc)) from None
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not {a.rstrip("/") for a in audiences} & {a.rstrip("/") for a in issuer.audiences}:
            raise self._refuse("the token is not meant for this service (aud)")

    async def id_token_claims(self, id_token: str, client_id: str, nonce: str) -> dict[str, Any]:
        """An OpenID id_token from a trusted issuer, for this client, answering this login's nonce."""
        header, unverified = _peek(id_token)
        issuer = self._issuers.get(str(unverified.get("iss", "")).rstrip("/"))
        if issuer is None:
            raise self._refuse("the id_token's issuer is not trusted")
        keys = await issuer.keys(header.get("kid"))
        try:
            claims = jwt.decode(id_token, keys, algorithms=list(self.settings.algorithms)).claims
            JWTClaimsRegistry(leeway=self.settings.leeway_s, exp={"essential": True}).validate(claims)
        except JoseError as exc:
            raise self._refuse(f"id_token check failed ({exc.error})") from None
        audiences = claims.get("aud")
        if client_id not in ([audiences] if isinstance(audiences, str) else list(audiences or [])):
            raise self._refuse("the id_token is not for this app")
        if not nonce or claims.get("nonce") != nonce:
            raise self._refuse("the id_token does not answer this login (nonce)")
        return claims

    async def _from_introspection(self, token: str) -> Principal:
        for issuer in self._issuers.values():
            config = issuer.config.introspection
            if config is None:
                continue
            try:
                response = await self._http.post(config.endpoint, data={"token": token},
                                                 auth=(config.client_id, config.client_secret))
                response.raise_for_status()
                answer = response.json()
            except (httpx.HTTPError, ValueError):
                continue
            if answer.get("active"):
                if answer.get("exp") and answer["exp"] + self.settings.leeway_s < time.time():
                    raise self._refuse("the token has expired")
                self._check_claims({**answer, "exp": answer.get("exp", time.time() + 60)}, issuer.config)
                return _principal(answer, token, issuer.config)
        raise self._refuse("the token is not active (introspection)")

    def _refuse(self, reason: str) -> InvalidToken:
        event(log, "auth.refused", level=logging.WARNING, reason=reason)
        return InvalidToken(reason)


def _principal(claims: dict[str, Any], token: str, issuer: IssuerSettings) -> Principal:
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
    scope = claims.get("scope") or claims.get("scp") or ""
    if isinstance(scope, list):
        scope = " ".join(scope)
    return Principal(issuer=issuer.issuer, subject=str(claims.get("sub") or ""), client_id=claims.get("client_id"),
                     scope=scope, scopes=parse(scope), patient=claims.get("patient"),
                     encounter=claims.get("encounter"), fhir_user=_fhir_user(claims.get("fhirUser")),
                     audiences=audiences, token=token)


def _fhir_user(value: Any) -> str | None:
    """fhirUser may be absolute (https://ehr/fhir/Practitioner/123) or relative; keep Type/id."""
    if not isinstance(value, str) or "/" not in value:
        return None
    resource_type, resource_id = value.rstrip("/").split("/")[-2:]
    return f"{resource_type}/{resource_id}"


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before verification: only to choose the issuer and keys, never trusted."""
    try:
        head, body, _ = token.split(".")
        return json.loads(_b64(head)), json.loads(_b64(body))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("the token is not a well-formed JWT") from None


def _b64(part: str) -> bytes:
    return urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


def _claim_problem(exc: JoseError) -> str:
    name = type(exc).__name__
    if "Expired" in name:
        return "the token has expired"
    if "not yet valid" in (exc.description or "").lower():
        return "the token is not valid yet"
    return f"the token's claims are not acceptable ({exc.error}: {exc.description or ''})".strip()
