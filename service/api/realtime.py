"""``GET /v1/realtime?intent=transcription``: live dictation over WebSocket, the OpenAI Realtime API's
transcription mode (service/realtime). Thin: authorize, admit, look up the chart's vocabulary, hand the socket's
messages to a session.

Refusals before the socket is accepted are plain HTTP answers (401/403/503 problem+json; a client library shows
the status), so a load balancer or a client can tell "busy, retry" from "not allowed".
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.api.deps import get_cookies, get_dictations, get_pool, get_refusals, get_settings, get_tokens
from service.api.problems import problem
from service.api.security import authenticated, chart_readable, stream_patient
from service.auth.errors import Forbidden
from service.auth.session import SealedCookies
from service.auth.tokens import TokenValidator
from service.config import Settings
from service.dictation import DictationService
from service.errors import ScribeError
from service.fhir.refusals import RefusalAuditor
from service.logs import event, request_id
from service.realtime.session import Closed, RealtimeSession
from service.transcription.pool import TranscriptionPool

log = logging.getLogger(__name__)
router = APIRouter(tags=["OpenAI-compatible"])


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, settings: Settings = Depends(get_settings),
                   pool: TranscriptionPool = Depends(get_pool),
                   dictations: DictationService = Depends(get_dictations),
                   refusals: RefusalAuditor | None = Depends(get_refusals),
                   tokens: TokenValidator | None = Depends(get_tokens),
                   cookies: SealedCookies | None = Depends(get_cookies)) -> None:
    intent = websocket.query_params.get("intent", "transcription")
    try:
        if intent != "transcription":
            raise _NotServed(f"intent '{intent}' is not served here: fhir-scribe serves ?intent=transcription")
        principal = await authenticated(websocket, tokens, settings, cookies)  # refusals answered below, as HTTP
        patient = stream_patient(settings, principal, websocket.query_params.get("patient"))
        with pool.stream_admission(settings.realtime.max_streams):
            options = await dictations.live_options(patient, chart_readable(principal))
            await websocket.accept()
            session = RealtimeSession(pool, settings.realtime, options, _sender(websocket))
            closed = await session.run(_receiver(websocket))
    except ScribeError as refusal:
        if websocket.client_state == WebSocketState.CONNECTING:
            await _refuse(websocket, refusal, refusals)
            return
        closed = Closed(1011, refusal.slug)
    except WebSocketDisconnect:
        return
    if closed is not None and websocket.client_state == WebSocketState.CONNECTED:
        await websocket.close(closed.code, closed.reason)


class _NotServed(ScribeError):
    status, slug, title = 400, "bad-request", "Bad request"


async def _refuse(websocket: WebSocket, refusal: ScribeError, refusals: RefusalAuditor | None) -> None:
    event(log, "request.problem", status=refusal.status, problem=refusal.slug, route="/v1/realtime")
    principal = getattr(websocket.state, "principal", None)
    if isinstance(refusal, Forbidden) and refusals is not None and principal is not None:
        refusals.record(user=principal.fhir_user, client_id=principal.client_id, patient=principal.patient,
                        request_id=request_id.get() or "")
    await websocket.send_denial_response(problem(refusal.status, refusal.slug, refusal.title, refusal.detail,
                                                 refusal.headers))


def _sender(websocket: WebSocket) -> Any:
    lock = asyncio.Lock()  # the reader and the decoder both send: one message at a time

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await websocket.send_text(json.dumps(message))

    return send


def _receiver(websocket: WebSocket) -> Any:
    async def receive() -> str | bytes | None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        return message.get("text") if message.get("text") is not None else message.get("bytes", b"")

    return receive
