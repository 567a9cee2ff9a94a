"""The ASGI application: wires settings, the engine and the routers; no business logic here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __doc__ as service_doc
from service.api import app_page, dictations, health, notify, realtime, sections, smart, transcriptions, wellknown
from service.api.body_limits import BodyLimitMiddleware
from service.api.deps import Runtime
from service.api.draining import Drain, DrainMiddleware
from service.api.middleware import RequestContextMiddleware
from service.api.multipart import UploadGate
from service.api.problems import install_problem_handlers
from service.auth.backend import BackendServices
from service.auth.oauth import AuthServers, load_private_key
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
from service.transcription.engine import Transcriber, load_transcriber
from service.transcription.pool import TranscriptionPool

log = logging.getLogger(__name__)


def create_app(settings: Settings, transcriber: Transcriber | None = None,
               sectioner: Sectioner | None = None) -> FastAPI:
    """Stages may be passed in (tests share them); otherwise they are built at start-up."""

    auth = settings.auth
    if auth.enabled and not auth.issuers:
        raise ConfigError("SCRIBE_AUTH__ISSUERS: auth is enabled but no trusted issuer is configured; "
                          "set SCRIBE_AUTH__ENABLED=false only for a local demo")
    # One connection pool per upstream: the authorization servers (discovery, JWKS, token and introspection
    # endpoints, the SMART style document) here, the FHIR server in FhirClient; each closed once at shutdown.
    auth_servers = AuthServers()
    backend = (BackendServices(auth.backend_services, settings.fhir.base_url, auth_servers)
               if auth.backend_services else None)
    app_key = (load_private_key(settings.smart_app.private_key_path, None, "SCRIBE_SMART_APP__PRIVATE_KEY_PATH")
               if settings.smart_app.client_auth == "private_key_jwt" and settings.smart_app.private_key_path
               else None)
    # A bad key stops start-up, named.
    keys = [decode_key(k.get_secret_value()) for k in settings.smart_app.session_keys]

    runtime = Runtime(settings=settings, drain=Drain(retry_after_s=1),  # a draining replica's callers go elsewhere
                      uploads=UploadGate(settings.audio.max_concurrent_uploads, settings.transcription.retry_after_s),
                      public_keys=[k.as_dict(private=False) for k in (backend.key if backend else None, app_key) if k])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not auth.enabled:
            event(log, "auth.DISABLED", level=logging.WARNING,
                  warning="authorization is OFF: every /v1 endpoint is open; for a local demo only")
        run = runtime  # filled in here, emptied at shutdown
        run.tokens = TokenValidator(auth, auth_servers) if auth.enabled else None
        if run.tokens is not None and keys:
            run.smart_app = SmartAppClient(settings.smart_app, settings.fhir.base_url, run.tokens, auth_servers,
                                           key=app_key)
            run.cookies = SealedCookies(keys)
        run.sections = SectionsWorker(settings.sections, sectioner)  # the length limit, threads, time budget
        pool = TranscriptionPool(transcriber or load_transcriber(settings.transcription))
        run.fhir = fhir = FhirClient(settings.fhir, service_token=backend.token if backend else None)
        run.dictations = DictationService(settings, pool, run.sections, NoteWriter(fhir))
        run.refusals = RefusalAuditor(fhir, settings.fhir, per_minute=settings.auth.refusal_audits_per_minute,
                                      has_service_identity=bool(backend or settings.fhir.bearer_token))
        run.pool = pool
        if settings.subscriptions.secret:
            run.subscriptions = Dispatcher(JobRunner(settings, run.dictations, fhir), settings.subscriptions)
            run.subscriptions.start()
        yield
        if run.subscriptions is not None:
            await run.subscriptions.stop()
        await run.refusals.drain()
        run.pool = run.dictations = run.subscriptions = None
        pool.shutdown()
        run.sections.shutdown()
        await fhir.aclose()
        await auth_servers.aclose()

    app = FastAPI(title="fhir-scribe", version="0.1.0", description=service_doc, lifespan=lifespan)
    app.state.runtime = runtime  # read through service/api/deps.py only
    install_problem_handlers(app, settings)
    # Outermost first: request id and access log + metrics, then draining (a refusal has a request id), then
    # body limits.
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(DrainMiddleware, drain=runtime.drain, fhir_path=settings.subscriptions.path)
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
