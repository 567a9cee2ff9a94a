"""A key the issuer removes from its JWKS stops being trusted after jwks_ttl_s, without a restart. The JWKS is
served over real HTTP by a small server in the test (its key set changes during the test)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.auth.errors import InvalidToken
from service.auth.tokens import TokenValidator
from service.config import AuthSettings, IssuerSettings
from tests.conftest import free_port


@pytest.fixture
def issuer():
    keys = {"current": [RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})]}

    async def jwks(_):
        return JSONResponse({"keys": [k.as_dict(private=False) for k in keys["current"]]})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/jwks", jwks)]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", keys
    server.should_exit = True
    thread.join(5)


def _token(issuer_url: str, key: RSAKey) -> str:
    now = int(time.time())
    return jwt.encode({"alg": "RS256", "kid": key.kid}, {"iss": issuer_url, "aud": "scribe", "exp": now + 300,
                                                         "iat": now, "sub": "u", "scope": "user/*.cruds"}, key)


def test_a_removed_key_stops_being_trusted_after_the_ttl(issuer):
    url, keys = issuer
    settings = AuthSettings(issuers=[IssuerSettings(issuer=url, audiences=["scribe"], jwks_url=url + "/jwks")],
                            jwks_ttl_s=1.0, jwks_min_refresh_s=30)  # unknown-kid refetches would wait 30 s
    old_key = keys["current"][0]
    # Made before the clock starts: generating an RSA key can take longer than the 1 s TTL on a busy machine.
    new_key = RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256"})
    old_token = _token(url, old_key)

    async def run() -> None:
        validator = TokenValidator(settings)
        try:
            assert (await validator.principal(f"Bearer {old_token}")).subject == "u"
            keys["current"] = [new_key]  # rotated out
            assert (await validator.principal(f"Bearer {old_token}")).subject == "u"  # cached, in TTL
            await asyncio.sleep(1.2)  # past the TTL (the thing under test): any longer is past it too
            with pytest.raises(InvalidToken, match="signature check failed"):
                await validator.principal(f"Bearer {_token(url, old_key)}")
            assert (await validator.principal(f"Bearer {_token(url, keys['current'][0])}")).subject == "u"
        finally:
            await validator.aclose()

    asyncio.run(run())


def test_an_id_token_without_kid_is_checked_against_each_key(issuer):
    """EHRs (the SMART reference launcher) sign id_tokens without a kid while their JWKS holds several keys."""
    url, keys = issuer
    signer = RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256"})
    keys["current"] = [keys["current"][0], signer]
    settings = AuthSettings(issuers=[IssuerSettings(issuer=url, audiences=["scribe"], jwks_url=url + "/jwks")])
    now = int(time.time())
    claims = {"iss": url, "aud": "scribe-app", "exp": now + 300, "iat": now, "sub": "u", "nonce": "n1",
              "fhirUser": "Practitioner/p1"}
    kidless = jwt.encode({"alg": "RS256"}, claims, signer)
    stranger = jwt.encode({"alg": "RS256"}, claims, RSAKey.generate_key(2048))

    async def run() -> None:
        validator = TokenValidator(settings)
        try:
            assert (await validator.id_token_claims(kidless, "scribe-app", "n1"))["fhirUser"] == "Practitioner/p1"
            with pytest.raises(InvalidToken, match="id_token check failed"):
                await validator.id_token_claims(stranger, "scribe-app", "n1")
            with pytest.raises(InvalidToken, match="nonce"):
                await validator.id_token_claims(kidless, "scribe-app", "other")
            with pytest.raises(InvalidToken, match="not for this app"):
                await validator.id_token_claims(kidless, "another-app", "n1")
        finally:
            await validator.aclose()

    asyncio.run(run())
