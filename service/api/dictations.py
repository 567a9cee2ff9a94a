"""Dictation endpoints: audio + context in, a note in the EHR out (or a draft to review first). Thin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import ExitStack

from fastapi import APIRouter, Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from service.api.deps import get_dictations, get_pool, get_settings
from service.api.bodies import json_body, read_json
from service.api.multipart import read_upload
from service.api.events import event_stream
from service.api.security import authenticated, authorize_dictation, chart_readable
from service.auth.errors import Forbidden
from service.auth.principal import Principal
from service.config import Settings
from service.dictation import DictationService
from service.documents.draft import DictationContext, Draft
from service.errors import ScribeError, Unprocessable
from service.fhir.writer import WriteResult
from service.logs import request_id
from service.transcription.pool import TranscriptionPool
from service.transcription.transcript import Segment

router = APIRouter(tags=["dictations"], dependencies=[Depends(authenticated)])

_FORM = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the dictation audio"},
            "patient": {"type": "string", "description": "Patient id; with a patient-scoped token, the token's"},
            "encounter": {"type": "string", "description": "Encounter id (must belong to the patient)"},
            "author": {"type": "string", "description": "Practitioner/<id> or PractitionerRole/<id>; with a token, its "
                                                         "fhirUser (must match when both are given)"},
            "note_type": {"type": "string", "description": "LOINC note type, default 11506-3 (progress note)"},
        },
    }}},
}
_IDEMPOTENCY = Header(None, alias="Idempotency-Key",
                      description="8-128 characters; the same key never writes a second note")


async def _read_dictation(request: Request, settings: Settings,
                          principal: Principal | None) -> tuple[bytes, DictationContext]:
    form = await read_upload(request, settings.audio)  # under an upload slot, at the minimum rate
    if "file" not in form.files:
        raise Unprocessable("the form has no 'file' part with the audio")
    requested = DictationContext.model_construct(
        patient=form.value("patient") or "", encounter=form.value("encounter") or None,
        author=form.value("author") or "", note_type=form.value("note_type") or settings.fhir.default_note_type)
    allowed = authorize_dictation(settings, principal, requested)
    try:
        ctx = DictationContext.model_validate(allowed.model_dump())
    except ValidationError as exc:
        raise Unprocessable("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
    return form.files.pop("file"), ctx


def _written(result: WriteResult, draft: Draft) -> JSONResponse:
    body = {**result.model_dump(), "draft": draft.model_dump(mode="json")}
    return JSONResponse(body, status_code=201 if result.created else 200,
                        headers={"Location": result.document_reference_url, "Cache-Control": "no-store"})


async def _draft_upload(request: Request, doc_status: str, idempotency_key: str | None, pool: TranscriptionPool,
                        settings: Settings, dictations: DictationService, principal: Principal | None) -> Draft:
    """Upload -> authorized context -> draft, holding a transcription slot once the upload is in memory."""
    pool.check_capacity()  # a full pool refuses before the upload is read, not after
    audio, ctx = await _read_dictation(request, settings, principal)
    with pool.admission():
        return await dictations.draft(audio, ctx, doc_status=doc_status, idempotency_key=idempotency_key,
                                      request_id=request_id.get() or "", chart_readable=chart_readable(principal))


async def _draft_events(request: Request, idempotency_key: str | None, pool: TranscriptionPool, settings: Settings,
                        dictations: DictationService, principal: Principal | None) -> Response:
    """The same draft as server-sent events: `segment` as each is decoded, then `draft` (or `error`, carrying
    the draft when there is one). The upload is read before the stream starts, then a transcription slot is
    taken and held until the stream ends. A client that leaves cancels the draft: the engine stops at its next
    segment and the slot is freed."""
    pool.check_capacity()  # a full pool refuses before the upload is read, not after
    audio, ctx = await _read_dictation(request, settings, principal)
    rid = request_id.get() or ""
    held = ExitStack()
    with held:
        held.enter_context(pool.admission())
        admission = held.pop_all()

    async def events() -> AsyncIterator[dict[str, str]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict | None] = asyncio.Queue()

        def on_segment(segment: Segment, duration_s: float) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, {"type": "segment", "text": segment.text,
                                                         "start": segment.start, "end": segment.end,
                                                         "duration": duration_s})

        async def produce() -> None:
            try:
                draft = await dictations.draft(audio, ctx, doc_status="final", idempotency_key=idempotency_key,
                                               request_id=rid, chart_readable=chart_readable(principal),
                                               on_segment=on_segment)
                await queue.put({"type": "draft", "draft": draft.model_dump(mode="json")})
            except ScribeError as failure:
                problem = {"type": failure.type_uri, "title": failure.title, "status": failure.status,
                           "detail": failure.detail, "request_id": rid, **jsonable_encoder(failure.extras)}
                await queue.put({"type": "error", "problem": problem})
            finally:
                await queue.put(None)

        with admission:
            task = asyncio.create_task(produce())
            try:
                while (item := await queue.get()) is not None:
                    yield {"event": item["type"], "data": json.dumps(item)}  # framed by event_stream
            finally:
                if not task.done():
                    task.cancel()  # the client left: stop the draft (and with it the engine)
                    await asyncio.gather(task, return_exceptions=True)

    return event_stream(events())


@router.post("/v1/dictations", openapi_extra={"requestBody": _FORM}, status_code=201,
             summary="Dictate a note: transcribe, structure and write it to the EHR (docStatus preliminary)")
async def create_dictation(request: Request, idempotency_key: str | None = _IDEMPOTENCY,
                           pool: TranscriptionPool = Depends(get_pool), settings: Settings = Depends(get_settings),
                           dictations: DictationService = Depends(get_dictations),
                           principal: Principal | None = Depends(authenticated)) -> JSONResponse:
    draft = await _draft_upload(request, "preliminary", idempotency_key, pool, settings, dictations, principal)
    result = await dictations.commit(draft, request_id=request_id.get() or "", from_client=False)
    return _written(result, draft)


@router.post("/v1/dictations/draft", openapi_extra={"requestBody": _FORM}, response_model=Draft,
             summary="Transcribe and structure for review; nothing is written (Accept: text/event-stream streams "
                     "segments as they are decoded, then the draft)")
async def draft_dictation(request: Request, idempotency_key: str | None = _IDEMPOTENCY,
                          pool: TranscriptionPool = Depends(get_pool), settings: Settings = Depends(get_settings),
                          dictations: DictationService = Depends(get_dictations),
                          principal: Principal | None = Depends(authenticated)) -> Response:
    if "text/event-stream" in request.headers.get("accept", ""):
        return await _draft_events(request, idempotency_key, pool, settings, dictations, principal)
    draft = await _draft_upload(request, "final", idempotency_key, pool, settings, dictations, principal)
    return JSONResponse(draft.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.post("/v1/dictations/commit", status_code=201, openapi_extra=json_body(Draft),
             summary="Write a reviewed (possibly edited) draft to the EHR (docStatus final)")
async def commit_dictation(request: Request, dictations: DictationService = Depends(get_dictations),
                           settings: Settings = Depends(get_settings),
                           principal: Principal | None = Depends(authenticated)) -> JSONResponse:
    draft = await read_json(request, Draft, settings.server.max_json_bytes)  # authenticated first, then read
    if authorize_dictation(settings, principal, draft.context) != draft.context:
        raise Forbidden("the draft's patient, encounter or author differs from the access token's launch context")
    final = draft.model_copy(update={"doc_status": "final"})
    result = await dictations.commit(final, request_id=request_id.get() or "")
    return _written(result, final)
