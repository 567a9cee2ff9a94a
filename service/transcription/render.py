"""Transcript -> the output formats OpenAI's transcription API offers (shared by the API and the CLI)."""

from __future__ import annotations

import json
from typing import Literal

from service.transcription.transcript import Transcript

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(transcript: Transcript, fmt: ResponseFormat, *, words: bool = False, segments: bool = True) -> str:
    if fmt == "json":
        return json.dumps({"text": transcript.text})
    if fmt == "text":
        return transcript.text + "\n"
    if fmt == "srt":
        return "\n".join(f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text.strip()}\n"
                         for i, s in enumerate(transcript.segments, start=1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text.strip()}\n"
                                         for s in transcript.segments)
    return json.dumps(verbose_json(transcript, words=words, segments=segments))


def verbose_json(transcript: Transcript, *, words: bool, segments: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "task": "transcribe",
        "language": transcript.language,
        "duration": transcript.duration_s,
        "text": transcript.text,
    }
    if segments:
        body["segments"] = [s.model_dump(exclude={"words"}) for s in transcript.segments]
    if words:
        body["words"] = [w.model_dump(exclude={"probability", "pieces"})
                         for s in transcript.segments for w in s.words or []]
    return body


def _stamp(seconds: float, decimal_mark: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{ms:03d}"
