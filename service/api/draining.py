"""Draining: from SIGTERM to exit without losing anything a caller was promised.

The port stays open while draining, so a load balancer sees ``/readyz`` turn 503 and a late caller gets a clear
503 + Retry-After (another replica will take it) instead of a refused connection. Audio not yet on a worker is
refused at once (its retry goes elsewhere); requests running transcriptions and note writes run to their end, up
to the deadline. Subscription jobs are already ``ready`` Tasks in the EHR (service/subscriptions/dispatcher.py), so
the queue here can die with the process; a job in hand past the deadline is set back to ready.
"""

from __future__ import annotations

import asyncio
import logging
import time

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.problems import error_response
from service.logs import event

if TYPE_CHECKING:
    from service.api.deps import Runtime

log = logging.getLogger(__name__)
# Probes and scrapes are answered while draining, and are not work to wait for.
EXEMPT = ("/healthz", "/readyz", "/metrics")


class Drain:
    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        metrics.IN_FLIGHT.set(self.in_flight)
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        metrics.IN_FLIGHT.set(self.in_flight)
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when every request in hand has finished within ``timeout_s``."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(timeout_s, 0))
        except TimeoutError:
            return False
        return True


async def drain(runtime: Runtime, seconds: float) -> None:
    """Stop admitting, refuse audio not yet on a worker, let work in hand finish for up to ``seconds``."""
    gate = runtime.drain
    gate.draining = True
    metrics.DRAINING.set(1)
    pool = runtime.pool
    if pool is not None:
        pool.drain()  # audio not yet on a worker: 503 now, retried elsewhere
    deadline = time.monotonic() + seconds
    event(log, "drain.start", in_flight=gate.in_flight, drain_s=seconds)
    subscriptions = runtime.subscriptions
    waits = [gate.wait_idle(seconds)]
    if subscriptions is not None:
        waits.append(subscriptions.drain(deadline))
    requests_done, *_ = await asyncio.gather(*waits)
    event(log, "drain.done", requests_finished=requests_done, in_flight=gate.in_flight,
          waited_s=round(seconds - max(deadline - time.monotonic(), 0), 2))


class DrainMiddleware:
    """Counts the requests in hand and, once draining, refuses new ones (not the probes or the scrape)."""

    def __init__(self, app: ASGIApp, drain: Drain, fhir_path: str) -> None:
        self.app = app
        self.drain = drain
        self.fhir_path = fhir_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(scope, receive, send)
            return
        self.drain.enter()
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            await self.app(scope, receive, send_started)
        except asyncio.CancelledError:
            # Still running when the drain ran out: a 503 the client can retry (its Idempotency-Key makes that
            # safe even if the note was written), not a bare 500 from the server's shutdown.
            if self.drain.draining and not started and scope["type"] == "http":
                await self._refuse(scope, receive, send, cut_off=True)
            raise
        finally:
            self.drain.leave()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, cut_off: bool = False) -> None:
        metrics.REJECTED.labels("draining").inc()
        detail = ("this replica stopped before your request finished; send it again (with the same Idempotency-Key "
                  "a note already written is found, not written twice)" if cut_off else
                  "this replica is shutting down; send the request again (another replica will take it)")
        headers = {"Retry-After": str(self.drain.retry_after_s), "Connection": "close"}
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1012, "reason": "service restarting"})
            return
        response = error_response(scope["path"], self.fhir_path, 503, "draining", "Service restarting", detail, headers)
        await response(scope, receive, send)
