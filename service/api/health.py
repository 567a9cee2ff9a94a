"""Liveness and readiness probes (for Kubernetes or a load balancer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api.deps import get_pool
from service.transcription.pool import TranscriptionPool

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and warmed up")
async def readyz(request: Request, pool: TranscriptionPool = Depends(get_pool)) -> dict[str, object]:
    engine = pool.transcriber
    auth = request.app.state.settings.auth
    return {"status": "ready", "model": engine.source.name, "model_revision": engine.source.revision,
            "device": engine.device, "compute_type": engine.compute_type, "admitted_jobs": pool.admitted,
            "auth": "enabled" if auth.enabled else "DISABLED: every /v1 endpoint is open (local demo only)"}
