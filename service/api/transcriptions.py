"""OpenAI-compatible ``POST /v1/audio/transcriptions`` (and ``GET /v1/models``), so existing speech tools and the
``openai`` SDKs can point at fhir-scribe unchanged. Thin: parse, decode, transcribe, render.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from service.audio import decode
from service.config import Settings
from service.errors import BadRequest, ScribeError, Unprocessable
from service.api.events import event_stream
from service.api.security import authenticated
from service.api.deps import get_pool, get_settings
from service.api.multipart import Form, read_upload
from service.transcription.models import accepts_model
from service.transcription.pool import TranscriptionPool
from service.transcription.render import MEDIA_TYPES, ResponseFormat, render
from service.transcription.transcript import Segment, TranscribeOptions, Transcript

router = APIRouter(tags=["OpenAI-compatible"], dependencies=[Depends(authenticated)])

_REQUEST_SCHEMA = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "wav, mp3, m4a/aac, flac, ogg/opus or webm/opus; format detected from the bytes"},
            "model": {"type": "string", "description": "'whisper-1' or the served model's name"},
            "language": {"type": "string", "description": "ISO 639-1 code, e.g. en"},
            "prompt": {"type": "string", "description": "vocabulary / style hint (Whisper initial prompt)"},
            "response_format": {"type": "string", "enum": list(MEDIA_TYPES)},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment", "word"]}},
            "stream": {"type": "boolean", "description": "server-sent events, one per decoded segment"},
        },
    }}},
}


class TranscriptionForm(BaseModel):
    model: str | None = None
    language: str | None = None
    prompt: str | None = Field(None, max_length=4000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = ["segment"]
    stream: bool = False

    @classmethod
    def parse(cls, form: Form) -> "TranscriptionForm":
        raw: dict[str, object] = {k: form.value(k) for k in cls.model_fields if form.value(k) not in (None, "")}
        granularities = form.fields.get("timestamp_granularities[]") or form.fields.get("timestamp_granularities")
        if granularities:
            raw["timestamp_granularities"] = granularities
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None

    def options(self, defaults: TranscribeOptions) -> TranscribeOptions:
        return defaults.model_copy(update={
            "language": self.language or defaults.language,
            "initial_prompt": self.prompt or defaults.initial_prompt,
            # OpenAI: 0 means "let the decoder raise the temperature when needed" = Whisper's fallback schedule.
            "temperature": self.temperature or None,
            "word_timestamps": defaults.word_timestamps or "word" in self.timestamp_granularities,
        })


@router.post("/v1/audio/transcriptions", openapi_extra={"requestBody": _REQUEST_SCHEMA},
             summary="Transcribe audio (OpenAI-compatible)")
async def create_transcription(request: Request, pool: TranscriptionPool = Depends(get_pool),
                               settings: Settings = Depends(get_settings)) -> Response:
    pool.check_capacity()  # a full pool refuses before the upload is read, not after
    form = await read_upload(request, settings.audio)  # under an upload slot, never a transcription slot
    if "file" not in form.files:
        raise Unprocessable("the form has no 'file' part with the audio")
    params = TranscriptionForm.parse(form)
    _check_model(params.model, pool.transcriber.source.name)
    if "word" in params.timestamp_granularities and params.response_format != "verbose_json" and not params.stream:
        raise BadRequest("timestamp_granularities[]=word needs response_format=verbose_json")
    options = params.options(pool.transcriber.default_options())
    pool.transcriber.check_options(options)
    with ExitStack() as held:
        held.enter_context(pool.admission())  # taken once the upload is in memory, before decoding
        audio = await asyncio.to_thread(decode, form.files.pop("file"), settings.audio)

        if params.stream:
            return event_stream(_events(pool.stream(audio, options), held.pop_all()))
        transcript = await pool.transcribe(audio, options)
    body = render(transcript, params.response_format, words="word" in params.timestamp_granularities,
                  segments="segment" in params.timestamp_granularities)
    return Response(body, media_type=MEDIA_TYPES[params.response_format], headers={"Cache-Control": "no-store"})


@router.get("/v1/models", summary="The model this process serves (OpenAI-compatible)")
async def list_models(pool: TranscriptionPool = Depends(get_pool)) -> dict[str, object]:
    source = pool.transcriber.source
    return {"object": "list", "data": [{"id": source.name, "object": "model", "owned_by": "fhir-scribe",
                                        "revision": source.revision}]}


async def _events(items: AsyncIterator[Segment | Transcript], admission: ExitStack) -> AsyncIterator[dict[str, str]]:
    """OpenAI's transcription stream events: a text delta per segment (with its times), then done. Leaving early
    closes ``items``, which stops the engine at its next segment."""
    with admission:
        try:
            async for item in items:
                if isinstance(item, Segment):
                    yield _data({"type": "transcript.text.delta", "delta": item.text, "segment_id": str(item.id),
                                 "start": item.start, "end": item.end})
                else:
                    yield _data({"type": "transcript.text.done", "text": item.text, "language": item.language,
                                 "duration": item.duration_s})
        except ScribeError as exc:
            yield {"event": "error", **_data({"error": {"message": exc.detail, "type": exc.slug}})}
            return
        finally:
            await items.aclose()  # type: ignore[attr-defined]
        yield {"data": "[DONE]"}


def _data(payload: dict[str, object]) -> dict[str, str]:
    return {"data": json.dumps(payload)}


def _check_model(requested: str | None, served: str) -> None:
    if accepts_model(requested, served):
        return
    raise BadRequest(f"model '{requested}' is not served here; this service runs '{served}' (or say 'whisper-1')")
