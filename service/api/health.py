"""Liveness and readiness probes (for Kubernetes or a load balancer), and the Prometheus scrape."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse, Response

from service import metrics
from service.api.deps import get_drain, get_pool, get_settings
from service.api.draining import Drain
from service.config import Settings
from service.transcription.pool import TranscriptionPool

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and warmed up, and the replica is not draining")
async def readyz(drain: Drain = Depends(get_drain), settings: Settings = Depends(get_settings),
                 pool: TranscriptionPool = Depends(get_pool)) -> Response:
    if drain.draining:  # after SIGTERM: out of the load balancer's rotation, work in hand finishing
        return JSONResponse({"status": "draining", "in_flight": drain.in_flight}, status_code=503)
    engine = pool.transcriber
    auth = settings.auth
    return JSONResponse({
        "status": "ready", "model": engine.source.name, "model_revision": engine.source.revision,
        "device": engine.device, "compute_type": engine.compute_type, "admitted_jobs": pool.admitted,
        "auth": "enabled" if auth.enabled else "DISABLED: every /v1 endpoint is open (local demo only)"})


metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", summary="Prometheus metrics (no patient data in any label; no token needed)",
                    response_class=Response)
async def scrape() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
