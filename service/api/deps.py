"""FastAPI dependencies: the objects built once at start-up, handed to routers."""

from __future__ import annotations

from fastapi import Request

from service.config import Settings
from service.errors import ScribeError
from service.dictation import DictationService
from service.transcription.pool import TranscriptionPool


class NotReady(ScribeError):
    status, slug, title = 503, "not-ready", "Not ready"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> TranscriptionPool:
    pool = getattr(request.app.state, "pool", None)
    if pool is None:
        raise NotReady("the transcription model is not loaded yet")
    return pool


def get_dictations(request: Request) -> "DictationService":
    service = getattr(request.app.state, "dictations", None)
    if service is None:
        raise NotReady("the dictation service is not ready yet")
    return service
