"""Request id + one access-log line and one latency observation per request, as a plain ASGI middleware (it must not buffer SSE streams).

The line names the route template (``/v1/audio/transcriptions``), never the raw path or query, which in FHIR
land can hold patient ids.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.problems import error_response
from service.logs import event, request_id

log = logging.getLogger("service.access")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, fhir_path: str) -> None:
        self.app = app
        self.fhir_path = fhir_path  # FHIR-facing routes answer an unexpected error as an OperationOutcome

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = offered if _SAFE_ID.match(offered) else uuid.uuid4().hex
        token = request_id.set(rid)
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, token)
            return
        started = time.perf_counter()
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # answered here, inside the request's context: the 500 carries its request id
            event(log, "request.failed", level=logging.ERROR, exc_type=type(exc).__name__)
            if responded:
                raise
            detail = "an unexpected error occurred; quote the request_id when reporting it"
            response = error_response(scope["path"], self.fhir_path, 500, "internal-error", "Internal error", detail)
            await response(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # a template: never a raw path (ids)
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "other"  # a closed set of labels
            metrics.HTTP_DURATION.labels(route, method, str(status)).observe(elapsed)
            event(log, "http.request", method=scope["method"], route=route, status=status,
                  duration_ms=round(elapsed * 1000, 1), bytes_in=_content_length(headers))
            request_id.reset(token)


    async def _websocket(self, scope: Scope, receive: Receive, send: Send, token: object) -> None:
        """A live stream: one log line when it ends (how long, how it ended), in the request id's context."""
        started = time.perf_counter()
        outcome = "error"

        async def send_outcome(message: Message) -> None:
            nonlocal outcome
            if message["type"] == "websocket.accept":
                outcome = "accepted"
            elif message["type"] == "websocket.http.response.start":
                outcome = f"refused {message['status']}"
            elif message["type"] == "websocket.close" and outcome == "accepted":
                outcome = f"closed {message.get('code', 1000)}"
            await send(message)

        try:
            await self.app(scope, receive, send_outcome)
        finally:
            event(log, "websocket", route=getattr(scope.get("route"), "path", "unmatched"), outcome=outcome,
                  duration_ms=round((time.perf_counter() - started) * 1000, 1))
            request_id.reset(token)  # type: ignore[arg-type]


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length", b"")
    return int(value) if value.isdigit() else None
