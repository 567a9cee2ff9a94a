"""Running the app under uvicorn: HTTPS, trusted proxies, the metrics port, and SIGTERM as a drain.

uvicorn alone stops listening at the first SIGTERM; here the first SIGTERM (or Ctrl+C) starts a drain
(service/api/draining.py) and the server exits when it is over; a second one exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service import metrics
from service.api.app import create_app
from service.api.deps import app_runtime
from service.api.draining import drain
from service.config import ConfigError, ServerSettings, load_settings
from service.logs import configure_logging, event
from service.transcription.engine import load_transcriber

log = logging.getLogger(__name__)


def tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The HTTPS context (TLS 1.2 or newer), or None without a certificate. Built before the model loads, so a bad
    certificate or key stops start-up at once, naming the settings, not as a traceback a minute later."""
    if settings.tls_certfile is None or settings.tls_keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile)
    except (OSError, ssl.SSLError) as failure:
        raise ConfigError(f"SCRIBE_SERVER__TLS_CERTFILE / SCRIBE_SERVER__TLS_KEYFILE (server.tls_certfile / "
                          f"server.tls_keyfile): cannot load the certificate and key ({failure}); both must be PEM "
                          f"and the key must be the certificate's") from None
    return context


def _config(app: object, settings: ServerSettings, host: str, port: int, *,
            tls: ssl.SSLContext | None = None) -> uvicorn.Config:
    trusted = settings.forwarded_allow_ips.strip()
    options: dict[str, object] = {}
    if tls is not None:
        options = {"ssl_context_factory": lambda config, default: tls}
    # uvicorn trusts X-Forwarded-* from 127.0.0.1 unless told otherwise: here only from the configured proxies.
    # After the drain, requests still running get a moment to answer, then are cancelled: exit is bounded.
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                          lifespan="on" if app is not _scrape else "off", timeout_graceful_shutdown=3,
                          proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
                          server_header=False, **options)


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_s = drain_s
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested or not self.started:
            super().handle_exit(sig, frame)  # a second signal, or before start-up finished: exit now
            self.force_exit = self.force_exit or self._drain_requested
            return
        self._captured_signals.append(sig)
        self._drain_requested = True  # the event loop picks it up at its next tick (a signal handler cannot await)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        return await super().on_tick(counter)

    async def _drain(self) -> None:
        try:
            await drain(app_runtime(self.app), self.drain_s)
        finally:
            self.should_exit = True


class _QuietServer(uvicorn.Server):
    """The metrics server: the main server owns the signals and tells it when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _scrape(scope: dict, receive: Callable, send: Callable) -> None:
    """The whole metrics app: GET /metrics, and 404 for anything else."""
    if scope["type"] != "http":
        return
    if scope["path"] != "/metrics":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"not found: GET /metrics\n"})
        return
    body, content_type = metrics.exposition()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body})


def serve(app: FastAPI, settings: ServerSettings, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    """``tls``: from ``tls_context`` (HTTPS on the service port; the metrics port stays plain HTTP, in-cluster)."""
    main = _DrainingServer(_config(app, settings, host, port, tls=tls), app, settings.drain_s)
    scraper = (_QuietServer(_config(_scrape, settings, host, settings.metrics_port))
               if settings.metrics_port is not None else None)

    async def run() -> None:
        if scraper is None:
            await main.serve()
            return
        scraping = asyncio.create_task(scraper.serve())
        try:
            await main.serve()
        finally:
            scraper.should_exit = True
            await scraping

    event(log, "server.start", scheme="https" if tls else "http", port=port,
          metrics_port=settings.metrics_port or port, trusted_proxies=bool(settings.forwarded_allow_ips.strip()))
    asyncio.run(run())


def run(host: str | None = None, port: int | None = None) -> int:
    """`fhir-scribe serve` and the demo: settings, logging, the certificate, then the model, so that a bad setting
    stops start-up at once with its name (ConfigError, exit code 2) before a port is bound."""
    settings = load_settings()
    configure_logging(settings.logging.level)
    tls = tls_context(settings.server)
    app = create_app(settings, transcriber=load_transcriber(settings.transcription))
    serve(app, settings.server, host=host or settings.server.host, port=port or settings.server.port, tls=tls)
    return 0
