"""The OpenAI Realtime API's transcription mode, as far as fhir-scribe speaks it: client events in, server events
out (shapes: ../shared/standards.md "Streaming transcription").

Two session shapes arrive in the wild: the GA ``session.update`` with ``session.type: "transcription"`` and
``audio.input.*``, and the older flat ``transcription_session.update``. Both are read into one ``SessionConfig``;
the reply uses the shape the client spoke. Unknown fields are ignored (clients send noise reduction, logprobs
and the like); values that would be silently wrong here (another audio format, a model not served) are errors.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.realtime.listening import ServerVad

# Our own event, sent only when the client asks for it in ``include``: the words not yet confirmed, replacing the
# previous tentative text of that item (an app shows them greyed; OpenAI clients never see it unasked).
TENTATIVE = "item.input_audio_transcription.tentative"
RATES = (24000, 16000)


class ProtocolError(Exception):
    """An ``error`` event for the client; ``close`` (a WebSocket close code) ends the stream after it."""

    def __init__(self, code: str, message: str, *, kind: str = "invalid_request_error", close: int | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.kind, self.close, self.param = code, message, kind, close, param


@dataclass(frozen=True)
class SessionConfig:
    shape: Literal["ga", "beta"] = "ga"
    rate: int = 24000
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    turn_detection: ServerVad | None = field(default_factory=ServerVad)
    include: tuple[str, ...] = ()


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Vad(_Open):
    type: str = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=100, le=10000)


class _Transcription(_Open):
    model: str | None = None
    language: str | None = None
    prompt: str | None = Field(None, max_length=4000)


class _Format(_Open):
    type: str = "audio/pcm"
    rate: int = 24000


class _Input(_Open):
    format: _Format | None = None
    transcription: _Transcription | None = None
    turn_detection: _Vad | None = Field(default_factory=_Vad)


class _Audio(_Open):
    input: _Input = Field(default_factory=_Input)


class _GaSession(_Open):
    type: str = "transcription"
    audio: _Audio | None = None
    include: list[str] | None = None


class _BetaSession(_Open):
    input_audio_format: str | None = None
    input_audio_transcription: _Transcription | None = None
    turn_detection: _Vad | None = Field(default_factory=_Vad)
    include: list[str] | None = None


def parse_event(raw: str | bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("invalid_json", "the message is not JSON; send one JSON client event per message") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProtocolError("invalid_event", "a client event is a JSON object with a 'type'", param="type")
    return event


def updated(current: SessionConfig, event: dict[str, Any]) -> SessionConfig:
    """The session after a ``session.update`` / ``transcription_session.update``; fields left out stay."""
    body = event.get("session")
    if not isinstance(body, dict):
        raise ProtocolError("invalid_session", "the update has no 'session' object", param="session")
    try:
        if event["type"] == "session.update":
            return _from_ga(current, body)
        return _from_beta(current, body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError("invalid_value", f"session.{where}: {first['msg']}", param=f"session.{where}") from None


def _from_ga(current: SessionConfig, body: dict[str, Any]) -> SessionConfig:
    session = _GaSession.model_validate(body)
    if session.type != "transcription":
        raise ProtocolError("unsupported_session_type", f"this endpoint serves transcription sessions only, not "
                            f"'{session.type}'", param="session.type")
    changes: dict[str, Any] = {"shape": "ga"}
    audio_in = (body.get("audio") or {}).get("input") or {}
    if session.audio is not None and "format" in audio_in and session.audio.input.format is not None:
        fmt = session.audio.input.format
        if fmt.type != "audio/pcm":
            raise ProtocolError("unsupported_audio_format", f"audio format '{fmt.type}' is not supported here; send "
                                "audio/pcm (PCM16 little-endian mono)", param="session.audio.input.format.type")
        changes["rate"] = _rate(fmt.rate, "session.audio.input.format.rate")
    if session.audio is not None and session.audio.input.transcription is not None:
        changes.update(_transcription(session.audio.input.transcription))
    if "turn_detection" in audio_in:
        changes["turn_detection"] = _turns(session.audio.input.turn_detection if session.audio else None,
                                           "session.audio.input.turn_detection")
    if session.include is not None:
        changes["include"] = tuple(session.include)
    return replace(current, **changes)


def _from_beta(current: SessionConfig, body: dict[str, Any]) -> SessionConfig:
    session = _BetaSession.model_validate(body)
    changes: dict[str, Any] = {"shape": "beta"}
    if session.input_audio_format is not None:
        if session.input_audio_format != "pcm16":
            raise ProtocolError("unsupported_audio_format", f"input_audio_format '{session.input_audio_format}' is "
                                "not supported here; send pcm16 (24 kHz)", param="session.input_audio_format")
        changes["rate"] = 24000
    if session.input_audio_transcription is not None:
        changes.update(_transcription(session.input_audio_transcription))
    if "turn_detection" in body:
        changes["turn_detection"] = _turns(session.turn_detection, "session.turn_detection")
    if session.include is not None:
        changes["include"] = tuple(session.include)
    return replace(current, **changes)


def _rate(rate: int, param: str) -> int:
    if rate not in RATES:
        raise ProtocolError("unsupported_audio_format", f"sample rate {rate} is not supported; send 24000 or 16000",
                            param=param)
    return rate


def _transcription(t: _Transcription) -> dict[str, Any]:
    return {"model": t.model, "language": t.language, "prompt": t.prompt}


def _turns(vad: _Vad | None, param: str) -> ServerVad | None:
    if vad is None:
        return None
    if vad.type != "server_vad":
        raise ProtocolError("unsupported_turn_detection", f"turn_detection '{vad.type}' is not supported here; use "
                            "server_vad or null (the client commits)", param=f"{param}.type")
    return ServerVad(vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms)


def session_object(config: SessionConfig, session_id: str, model: str) -> dict[str, Any]:
    vad = config.turn_detection
    turns = None if vad is None else {"type": "server_vad", "threshold": vad.threshold,
                                      "prefix_padding_ms": vad.prefix_padding_ms,
                                      "silence_duration_ms": vad.silence_duration_ms}
    transcription = {"model": config.model or model, "language": config.language or "en",
                     "prompt": config.prompt or ""}
    if config.shape == "beta":
        return {"id": session_id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
                "input_audio_transcription": transcription, "turn_detection": turns,
                "include": list(config.include)}
    return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": config.rate},
                                "transcription": transcription, "turn_detection": turns, "noise_reduction": None}},
            "include": list(config.include)}


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(error: ProtocolError, client_event_id: str | None = None) -> dict[str, Any]:
    return server_event("error", error={"type": error.kind, "code": error.code, "message": error.message,
                                        "param": error.param, "event_id": client_event_id})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"
