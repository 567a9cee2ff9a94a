"""FastAPI dependencies: the objects built once at start-up, handed to routers (HTTP and WebSocket alike)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from service.config import Settings
from service.errors import ScribeError
from service.dictation import DictationService
from service.fhir.refusals import RefusalAuditor
from service.transcription.pool import TranscriptionPool


class NotReady(ScribeError):
    status, slug, title = 503, "not-ready", "Not ready"


def get_settings(request: HTTPConnection) -> Settings:
    return request.app.state.settings


def get_pool(request: HTTPConnection) -> TranscriptionPool:
    pool = getattr(request.app.state, "pool", None)
    if pool is None:
        raise NotReady("the transcription model is not loaded yet")
    return pool


def get_dictations(request: HTTPConnection) -> "DictationService":
    service = getattr(request.app.state, "dictations", None)
    if service is None:
        raise NotReady("the dictation service is not ready yet")
    return service


def get_refusals(request: HTTPConnection) -> "RefusalAuditor | None":
    return getattr(request.app.state, "refusals", None)
