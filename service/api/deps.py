"""FastAPI dependencies: the objects built at start-up, handed to routers and middleware (HTTP and WebSocket
alike). This is the only module that reads ``app.state``: everything start-up made is one ``Runtime``, so a
reader finds each shared object, and when it exists, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from service.config import Settings
from service.errors import ScribeError

if TYPE_CHECKING:  # the types only: the objects are built by service/api/app.py
    from service.api.draining import Drain
    from service.api.multipart import UploadGate
    from service.auth.session import SealedCookies
    from service.auth.smart_app import SmartAppClient
    from service.auth.tokens import TokenValidator
    from service.dictation import DictationService
    from service.fhir.client import FhirClient
    from service.fhir.refusals import RefusalAuditor
    from service.sections.worker import SectionsWorker
    from service.subscriptions.dispatcher import Dispatcher
    from service.transcription.pool import TranscriptionPool


class NotReady(ScribeError):
    status, slug, title = 503, "not-ready", "Not ready"


class AppOff(ScribeError):
    status, slug, title = 404, "app-off", "SMART app not configured"


@dataclass
class Runtime:
    """Made by create_app (the first four) and its lifespan (the rest, None until start-up finishes and again
    after shutdown)."""
    settings: Settings
    drain: "Drain"
    uploads: "UploadGate"
    public_keys: list[dict[str, Any]] = field(default_factory=list)
    tokens: "TokenValidator | None" = None  # None: auth is off (local demo)
    smart_app: "SmartAppClient | None" = None
    cookies: "SealedCookies | None" = None
    sections: "SectionsWorker | None" = None
    pool: "TranscriptionPool | None" = None
    fhir: "FhirClient | None" = None
    dictations: "DictationService | None" = None
    refusals: "RefusalAuditor | None" = None
    subscriptions: "Dispatcher | None" = None


def app_runtime(app: Any) -> Runtime:
    return app.state.runtime


def runtime(connection: HTTPConnection) -> Runtime:
    return app_runtime(connection.app)


def get_settings(connection: HTTPConnection) -> Settings:
    return runtime(connection).settings


def get_pool(connection: HTTPConnection) -> "TranscriptionPool":
    pool = runtime(connection).pool
    if pool is None:
        raise NotReady("the transcription model is not loaded yet")
    return pool


def get_dictations(connection: HTTPConnection) -> "DictationService":
    service = runtime(connection).dictations
    if service is None:
        raise NotReady("the dictation service is not ready yet")
    return service


def get_sections(connection: HTTPConnection) -> "SectionsWorker":
    sections = runtime(connection).sections
    if sections is None:
        raise NotReady("the sections stage is not ready yet")
    return sections


def get_fhir(connection: HTTPConnection) -> "FhirClient":
    fhir = runtime(connection).fhir
    if fhir is None:
        raise NotReady("the FHIR client is not ready yet")
    return fhir


def get_refusals(connection: HTTPConnection) -> "RefusalAuditor | None":
    return runtime(connection).refusals


def get_tokens(connection: HTTPConnection) -> "TokenValidator | None":
    return runtime(connection).tokens


def get_cookies(connection: HTTPConnection) -> "SealedCookies | None":
    return runtime(connection).cookies


def get_smart_app(connection: HTTPConnection) -> "SmartAppClient":
    smart_app = runtime(connection).smart_app
    if smart_app is None:
        raise AppOff("the SMART app needs auth enabled and smart_app.session_keys configured")
    return smart_app


def get_subscriptions(connection: HTTPConnection) -> "Dispatcher | None":
    return runtime(connection).subscriptions


def get_drain(connection: HTTPConnection) -> "Drain":
    return runtime(connection).drain


def get_uploads(connection: HTTPConnection) -> "UploadGate":
    return runtime(connection).uploads


def get_public_keys(connection: HTTPConnection) -> list[dict[str, Any]]:
    return runtime(connection).public_keys
