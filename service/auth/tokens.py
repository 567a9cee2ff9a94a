"""Inbound access tokens -> a Principal, or a precise refusal.

JWTs are verified against the issuer's JWKS (discovered, cached, refetched once on an unknown kid at most every
``jwks_min_refresh_s``), with algorithms pinned to the configured asymmetric ones: ``none`` and HMAC keyed with
a public key cannot pass. ``iss`` picks the trusted issuer; ``aud``, ``exp``, ``nbf`` are checked with a small
leeway. Opaque tokens go to the issuer's RFC 7662 introspection endpoint. Nothing about a token reaches the logs
but its issuer and the reason it was refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from base64 import urlsafe_b64decode
from typing import Any

import httpx2
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from service.auth.errors import InvalidToken, MalformedAuthorization
from service.auth.oauth import AuthServers, TokenRequestFailed, load_private_key, token_request
from service.auth.principal import Principal
from service.auth.scopes import parse
from service.config import AuthSettings, IssuerSettings
from service.errors import ScribeError
from service.logs import event

log = logging.getLogger(__name__)
_INTROSPECTION_CACHE_S = 300.0
_INTROSPECTION_CACHE_SIZE = 10_000


class _NotOurs(Exception):
    """A bearer token that is not a JWT of a trusted issuer (its message says why)."""


# RFC 6750 s2.1 b64token: what a bearer token may consist of.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


class _Issuer:
    def __init__(self, config: IssuerSettings, servers: AuthServers, min_refresh_s: float,
                 ttl_s: float) -> None:
        self.config = config
        self._http = servers.http
        self._discovery = servers.discovery
        intro = config.introspection
        self.introspection = None if intro is None else servers.oauth_client(
            intro.client_id, intro.auth_method,
            secret=intro.client_secret.get_secret_value() if intro.client_secret else None,
            key=load_private_key(intro.private_key_path, None, "SCRIBE_AUTH__ISSUERS[].introspection.private_key_path")
            if intro.private_key_path else None)
        self._min_refresh_s = min_refresh_s
        self._ttl_s = ttl_s  # a key the issuer removed must stop being trusted without a restart
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def keys(self, kid: str | None, *, failed: bool = False) -> KeySet:
        """The issuer's keys; refetched when stale, when ``kid`` is unknown, or when a kid-less token ``failed``
        with all of them (the issuer may have rotated) — the last two at most every ``min_refresh_s``."""
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            expired = self._keys is None or age >= self._ttl_s
            unknown = failed or (kid is not None and self._keys is not None and not _has_kid(self._keys, kid))
            if expired or (unknown and age >= self._min_refresh_s):
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
        except (httpx2.HTTPError, ValueError) as exc:
            raise InvalidToken(f"cannot fetch the signing keys of {self.config.issuer} ({type(exc).__name__})") from None

    async def _discover_jwks_url(self) -> str:
        try:
            return (await self._discovery.configuration(self.config.issuer, required=("jwks_uri",)))["jwks_uri"]
        except ScribeError:
            raise InvalidToken(f"cannot discover the signing keys of {self.config.issuer}") from None


class TokenValidator:
    def __init__(self, settings: AuthSettings, servers: AuthServers | None = None) -> None:
        """``servers``: the connection pool to the authorization servers, closed by whoever made it (one of its
        own without it)."""
        self.settings = settings
        self._own_servers = servers is None
        self._servers = servers = servers or AuthServers()
        self._ehr_issuers: dict[str, _Issuer] = {}  # the SMART app's EHR, when not among auth.issuers
        self._introspected: dict[bytes, tuple[float, Principal]] = {}  # token digest -> (until, principal)
        self._issuers = {i.issuer.rstrip("/"): _Issuer(i, servers, settings.jwks_min_refresh_s, settings.jwks_ttl_s)
                         for i in settings.issuers}

    async def aclose(self) -> None:
        if self._own_servers:
            await self._servers.aclose()

    async def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise InvalidToken("send Authorization: Bearer <access token>", error=None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header is not 'Bearer <token>'", error="invalid_request")
        token = token.strip()
        if "," in token or " " in token:  # "Bearer a, Bearer b": two credentials folded into one header
            raise MalformedAuthorization("send exactly one bearer token")
        if not _B64TOKEN.match(token):
            raise self._refuse("the bearer token has characters a token cannot have")
        if token.count(".") == 2:
            try:
                return await self._from_jwt(token)
            except _NotOurs as foreign:
                if not self._introspecting:
                    raise self._refuse(str(foreign)) from None
                # Not a JWT a trusted issuer signed the way we verify (no iss, an EHR's HS256, an unknown
                # issuer): whatever its shape, the issuers' introspection decides.
                return await self._from_introspection(token, also=f"{foreign}, and ")
        return await self._from_introspection(token)

    @property
    def _introspecting(self) -> bool:
        return any(issuer.introspection is not None for issuer in self._issuers.values())

    async def _from_jwt(self, token: str) -> Principal:
        """A JWT whose ``iss`` is a trusted issuer is checked strictly here and its refusal is final; any other
        (``_NotOurs``) may still be introspected."""
        try:
            header, unverified = _peek(token)
        except InvalidToken as malformed:
            raise _NotOurs(malformed.detail) from None
        issuer = self._issuers.get(str(unverified.get("iss", "")).rstrip("/"))
        if issuer is None:
            raise _NotOurs("the token's issuer is not trusted")
        if header.get("alg") not in self.settings.algorithms:  # never echoed: the header is the caller's text
            raise self._refuse(f"the token's signing algorithm is not one of {', '.join(self.settings.algorithms)}")
        try:
            claims = await self._verified(token, header, issuer)
        except JoseError as exc:
            raise self._refuse(f"signature check failed ({exc.error})") from None
        self._check_claims(claims, issuer.config)
        return _principal(claims, token, issuer.config)

    def _check_claims(self, claims: dict[str, Any], issuer: IssuerSettings, require_aud: bool = True) -> None:
        problem = _claim_types(claims)
        if problem:
            raise self._refuse(problem)
        registry = JWTClaimsRegistry(leeway=self.settings.leeway_s, exp={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise self._refuse(_claim_problem(exc)) from None
        audiences = _strings(claims.get("aud"))
        if not require_aud and not audiences:
            return  # an introspection answer without aud: the issuer vouches for the token to us, its caller
        if not {a.rstrip("/") for a in audiences} & {a.rstrip("/") for a in issuer.audiences}:
            raise self._refuse("the token is not meant for this service (aud)")

    async def id_token_claims(self, id_token: str, client_id: str, nonce: str | None, *,
                              ehr_issuer: str | None = None, ehr_jwks_uri: str | None = None) -> dict[str, Any]:
        """An OpenID id_token for this client, answering this login's ``nonce`` (None: a refresh's id_token,
        which may omit it). Its issuer is a trusted one (auth.issuers) or the EHR's own authorization server as
        its smart-configuration names it (``ehr_issuer``, keys at ``ehr_jwks_uri``). Without a ``kid`` in the
        header, each key of the issuer's JWKS is tried (EHRs with one key often omit it)."""
        header, unverified = _peek(id_token)
        named = str(unverified.get("iss", "")).rstrip("/")
        issuer = self._issuers.get(named)
        if issuer is None and ehr_issuer and named == ehr_issuer.rstrip("/"):
            issuer = self._ehr_issuer(ehr_issuer, client_id, ehr_jwks_uri)
        if issuer is None:
            raise self._refuse("the id_token's issuer is not trusted")
        try:
            claims = await self._verified(id_token, header, issuer)
            if _claim_types(claims):
                raise self._refuse(f"id_token: {_claim_types(claims)}")
            JWTClaimsRegistry(leeway=self.settings.leeway_s, exp={"essential": True}).validate(claims)
        except JoseError as exc:
            raise self._refuse(f"id_token check failed ({exc.error})") from None
        if client_id not in _strings(claims.get("aud")):
            raise self._refuse("the id_token is not for this app")
        if (nonce is not None or "nonce" in claims) and (not nonce or claims.get("nonce") != nonce):
            raise self._refuse("the id_token does not answer this login (nonce)")
        return claims

    def _ehr_issuer(self, url: str, client_id: str, jwks_uri: str | None) -> _Issuer:
        issuer = self._ehr_issuers.get(url)
        if issuer is None:
            config = IssuerSettings(issuer=url, audiences=[client_id], jwks_url=jwks_uri)
            issuer = self._ehr_issuers[url] = _Issuer(config, self._servers, self.settings.jwks_min_refresh_s,
                                                      self.settings.jwks_ttl_s)
        return issuer

    async def _verified(self, token: str, header: dict[str, Any], issuer: _Issuer) -> dict[str, Any]:
        """The token's claims once its signature checks out with one of the issuer's keys (pinned algorithms)."""
        kid = header.get("kid")
        if not isinstance(kid, (str, type(None))):
            raise InvalidToken("the token's kid is not a string")
        keys = await issuer.keys(kid)
        try:
            return _decode(token, keys, list(self.settings.algorithms), kid)
        except JoseError:
            if kid is not None:
                raise
        return _decode(token, await issuer.keys(None, failed=True), list(self.settings.algorithms), None)

    async def _from_introspection(self, token: str, also: str = "") -> Principal:
        """RFC 7662 at each issuer that has it configured; an active answer's patient, encounter, fhirUser, scope
        and exp are used, and kept (by the token's digest) no longer than the token lives, nor than
        ``_INTROSPECTION_CACHE_S``, so a revoked token stops working within that."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._introspected.get(digest)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        for issuer in self._issuers.values():
            config = issuer.config.introspection
            if config is None or issuer.introspection is None:
                continue
            try:
                answer = await token_request(issuer.introspection.introspect_token(config.endpoint, token=token),
                                             "introspection endpoint")
            except TokenRequestFailed as failed:
                event(log, "auth.introspection_failed", level=logging.WARNING, issuer=issuer.config.issuer,
                      error=failed.error)
                continue
            if answer.get("active") is True:
                if not isinstance(answer.get("exp", 0), (int, float)):
                    raise self._refuse("the introspection answer's exp is not a number")
                if answer.get("exp") and answer["exp"] + self.settings.leeway_s < time.time():
                    raise self._refuse("the token has expired")
                exp = answer.get("exp", time.time() + 60)
                self._check_claims({**answer, "exp": exp}, issuer.config, require_aud="aud" in answer)
                principal = _principal(answer, token, issuer.config)
                self._remember(digest, principal, min(exp - time.time(), _INTROSPECTION_CACHE_S))
                return principal
        raise self._refuse(f"{also}the token is not active (introspection)")

    def _remember(self, digest: bytes, principal: Principal, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        now = time.monotonic()
        if len(self._introspected) >= _INTROSPECTION_CACHE_SIZE:
            for key in [k for k, (until, _) in self._introspected.items() if until <= now]:
                del self._introspected[key]
            while len(self._introspected) >= _INTROSPECTION_CACHE_SIZE:
                del self._introspected[next(iter(self._introspected))]
        self._introspected[digest] = (now + ttl_s, principal)

    def _refuse(self, reason: str) -> InvalidToken:
        event(log, "auth.refused", level=logging.WARNING, reason=reason)
        return InvalidToken(reason)


def _principal(claims: dict[str, Any], token: str, issuer: IssuerSettings) -> Principal:
    audiences = _strings(claims.get("aud"))
    scope = " ".join(_strings(claims.get("scope") or claims.get("scp")))
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
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidToken("the token is not a well-formed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("the token is not a well-formed JWT (header and claims must be JSON objects)")
    return header, claims


# The claims fhir-scribe reads, and the JSON types they must have (anything else is refused, never coerced).
_CLAIM_TYPES: dict[str, tuple[type, ...]] = {
    "iss": (str,), "sub": (str,), "client_id": (str,), "patient": (str,), "encounter": (str,), "fhirUser": (str,),
    "nonce": (str,), "exp": (int, float), "nbf": (int, float), "iat": (int, float),
}


def _claim_types(claims: dict[str, Any]) -> str | None:
    """What is wrong with the claims' types, or None. bool is an int in Python but not a JSON number here."""
    for name, kinds in _CLAIM_TYPES.items():
        value = claims.get(name)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            return f"the token's '{name}' claim is not a {'string' if kinds == (str,) else 'number'}"
    for name in ("aud", "scope", "scp"):
        value = claims.get(name)
        if value is not None and not (isinstance(value, str) or
                                      (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            return f"the token's '{name}' claim is not a string or a list of strings"
    return None


def _strings(value: Any) -> list[str]:
    """A claim that may be one string or a list of them (aud, scope as scp); types are checked before."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _b64(part: str) -> bytes:
    return urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _decode(token: str, keys: KeySet, algorithms: list[str], kid: str | None) -> dict[str, Any]:
    """With a kid, joserfc picks the key; without one, every key is tried (the first that verifies wins)."""
    if kid is not None:
        return jwt.decode(token, keys, algorithms=algorithms).claims
    failure: JoseError | None = None
    for key in keys.keys:
        try:
            return jwt.decode(token, key, algorithms=algorithms).claims
        except JoseError as exc:
            failure = exc
    raise failure or BadSignatureError()


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


def _claim_problem(exc: JoseError) -> str:
    name = type(exc).__name__
    if "Expired" in name:
        return "the token has expired"
    if "not yet valid" in (exc.description or "").lower():
        return "the token is not valid yet"
    return f"the token's claims are not acceptable ({exc.error}: {exc.description or ''})".strip()
