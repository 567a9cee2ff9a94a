"""The ASGI application: wires settings, the engine and the routers; no business logic here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from service import __doc__ as service_doc
from service.api import app_page, dictations, health, notify, realtime, sections, smart, transcriptions, wellknown
from service.api.body_limits import BodyLimitMiddleware
from service.api.draining import Drain, DrainMiddleware
from service.api.middleware import RequestContextMiddleware
from service.api.problems import install_problem_handlers
from service.auth.backend import BackendServices
from service.auth.oauth import Discovery, load_private_key
from service.auth.session import SealedCookies, decode_key
from service.auth.smart_app import SmartAppClient
from service.auth.tokens import TokenValidator
from service.config import ConfigError, Settings
from service.logs import event
from service.dictation import DictationService
from service.fhir.client import FhirClient
from service.fhir.refusals import RefusalAuditor
from service.fhir.writer import NoteWriter
from service.sections.pipeline import Sectioner
from service.sections.worker import SectionsWorker
from service.subscriptions.dispatcher import Dispatcher
from service.subscriptions.jobs import JobRunner
from service.transcription.engine import Transcriber
from service.transcription.models import resolve_model
from service.transcription.pool import TranscriptionPool

log = logging.getLogger(__name__)


def load_transcriber(settings: Settings) -> Transcriber:
    started = time.perf_counter()
    source = resolve_model(settings.transcription.model, settings.transcription.model_cache_dir)
    transcriber = Transcriber(source, settings.transcription)
    transcriber.warm_up()
    event(log, "model.ready", model=source.name, revision=source.revision, device=transcriber.device,
          compute_type=transcriber.compute_type, num_workers=settings.transcription.num_workers,
          load_s=round(time.perf_counter() - started, 2))
    return transcriber


def create_app(settings: Settings, transcriber: Transcriber | None = None,
               sectioner: Sectioner | None = None) -> FastAPI:
    """Stages may be passed in (tests share them); otherwise they are built at start-up."""

    auth = settings.auth
    if auth.enabled and not auth.issuers:
        raise ConfigError("SCRIBE_AUTH__ISSUERS: auth is enabled but no trusted issuer is configured; "
                          "set SCRIBE_AUTH__ENABLED=false only for a local demo")
    # One HTTP client for the authorization servers (discovery, JWKS, the SMART style document); the OAuth
    # registrations (app, Backend Services, introspection) each have their Authlib client.
    auth_http = httpx.AsyncClient(timeout=15)
    discovery = Discovery(auth_http)
    backend = (BackendServices(auth.backend_services, settings.fhir.base_url, discovery)
               if auth.backend_services else None)
    app_key = (load_private_key(settings.smart_app.private_key_path, None, "SCRIBE_SMART_APP__PRIVATE_KEY_PATH")
               if settings.smart_app.client_auth == "private_key_jwt" and settings.smart_app.private_key_path
               else None)
    # A bad key stops start-up, named.
    keys = [decode_key(k.get_secret_value()) for k in settings.smart_app.session_keys]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not auth.enabled:
            event(log, "auth.DISABLED", level=logging.WARNING,
                  warning="authorization is OFF: every /v1 endpoint is open; for a local demo only")
        app.state.tokens = TokenValidator(auth, auth_http, discovery) if auth.enabled else None
        app.state.smart_app = None
        if app.state.tokens is not None and keys:
            app.state.smart_app = (SmartAppClient(settings.smart_app, settings.fhir.base_url, app.state.tokens,
                                                  discovery, auth_http, key=app_key), SealedCookies(keys))
        app.state.sections = SectionsWorker(settings.sections, sectioner)  # the length limit, threads, time budget
        pool = TranscriptionPool(transcriber or load_transcriber(settings))
        fhir = FhirClient(settings.fhir, service_token=backend.token if backend else None)
        app.state.dictations = DictationService(settings, pool, app.state.sections, NoteWriter(fhir))
        app.state.refusals = RefusalAuditor(fhir, settings.fhir,
                                            has_service_identity=bool(backend or settings.fhir.bearer_token),
                                            per_minute=settings.auth.refusal_audits_per_minute)
        app.state.pool = pool
        app.state.subscriptions = None
        if settings.subscriptions.secret:
            runner = JobRunner(settings, app.state.dictations, fhir)
            app.state.subscriptions = Dispatcher(runner, settings.subscriptions)
            app.state.subscriptions.start()
        yield
        if app.state.subscriptions is not None:
            await app.state.subscriptions.stop()
        await app.state.refusals.drain()
        app.state.pool = app.state.dictations = None
        pool.shutdown()
        app.state.sections.shutdown()
        await fhir.aclose()
        if app.state.smart_app is not None:
            await app.state.smart_app[0].aclose()
        if app.state.tokens is not None:
            await app.state.tokens.aclose()
        if backend is not None:
            await backend.aclose()
        await auth_http.aclose()

    app = FastAPI(title="fhir-scribe", version="0.1.0", description=service_doc, lifespan=lifespan)
    app.state.settings = settings
    app.state.pool = None
    app.state.tokens = None
    app.state.smart_app = None
    app.state.subscriptions = None
    app.state.backend = backend
    app.state.public_keys = [k.as_dict(private=False) for k in (backend.key if backend else None, app_key) if k]
    app.state.drain = Drain(retry_after_s=1)  # a draining replica's callers go straight to another one
    install_problem_handlers(app)
    # Outermost first: request id and access log + metrics, then draining (a refusal has a request id), then
    # body limits.
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(DrainMiddleware, drain=app.state.drain, fhir_path=settings.subscriptions.path)
    app.add_middleware(RequestContextMiddleware, fhir_path=settings.subscriptions.path)
    app.include_router(health.router)
    if settings.server.metrics_port is None:  # else served on its own port (service/serving.py)
        app.include_router(health.metrics_router)
    app.include_router(wellknown.router)
    app.include_router(transcriptions.router)
    app.include_router(realtime.router)
    app.include_router(sections.router)
    app.include_router(dictations.router)
    app.include_router(smart.router)
    app.include_router(app_page.router)
    app.include_router(notify.router(settings.subscriptions.path))
    return app
