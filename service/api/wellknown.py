"""/.well-known/jwks.json: the public halves of fhir-scribe's keys (Backend Services, and the SMART app's when it
authenticates with private_key_jwt), for the EHR's token endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse

from service.api.deps import get_public_keys
from service.errors import ScribeError

router = APIRouter(tags=["well-known"])


class NoKeys(ScribeError):
    status, slug, title = 404, "no-keys", "No keys"


@router.get("/.well-known/jwks.json", summary="fhir-scribe's public keys (Backend Services, SMART app)")
async def jwks(keys: list[dict[str, Any]] = Depends(get_public_keys)) -> JSONResponse:
    if not keys:
        raise NoKeys("fhir-scribe has no key configured (auth.backend_services, or smart_app.private_key_path)")
    return JSONResponse({"keys": keys}, media_type="application/jwk-set+json",
                        headers={"Cache-Control": "public, max-age=300"})
