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
from service.api.draining import drain
from service.config import ServerSettings
from service.logs import event

log = logging.getLogger(__name__)


def _tls_1_2_or_newer(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _config(app: object, settings: ServerSettings, host: str, port: int, *, main: bool) -> uvicorn.Config:
    trusted = settings.forwarded_allow_ips.strip()
    options: dict[str, object] = {}
    if main and settings.tls_certfile is not None:  # the metrics port stays plain HTTP, inside the cluster
        options = {"ssl_certfile": str(settings.tls_certfile), "ssl_keyfile": str(settings.tls_keyfile),
                   "ssl_context_factory": _tls_1_2_or_newer}
    # uvicorn trusts X-Forwarded-* from 127.0.0.1 unless told otherwise: here only from the configured proxies.
    # After the drain, requests still running get a moment to answer, then are cancelled: exit is bounded.
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                          lifespan="on" if main else "off", timeout_graceful_shutdown=3,
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
            await drain(self.app.state, self.drain_s)
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


def serve(app: FastAPI, settings: ServerSettings, host: str, port: int) -> None:
    main = _DrainingServer(_config(app, settings, host, port, main=True), app, settings.drain_s)
    scraper = (_QuietServer(_config(_scrape, settings, host, settings.metrics_port, main=False))
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

    event(log, "server.start", scheme="https" if settings.tls_certfile else "http", port=port,
          metrics_port=settings.metrics_port or port, trusted_proxies=bool(settings.forwarded_allow_ips.strip()))
    asyncio.run(run())
