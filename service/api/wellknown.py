"""/.well-known/jwks.json: the public half of fhir-scribe's Backend Services key, for the EHR's token endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from service.errors import ScribeError

router = APIRouter(tags=["well-known"])


class NoKeys(ScribeError):
    status, slug, title = 404, "no-keys", "No keys"


@router.get("/.well-known/jwks.json", summary="fhir-scribe's public keys (SMART Backend Services)")
async def jwks(request: Request) -> JSONResponse:
    backend = request.app.state.backend
    if backend is None:
        raise NoKeys("fhir-scribe has no Backend Services key configured (auth.backend_services)")
    return JSONResponse(backend.jwks(), media_type="application/jwk-set+json",
                        headers={"Cache-Control": "public, max-age=300"})
