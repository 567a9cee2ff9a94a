"""What the transcription stage hands on: a typed transcript with the decoder's own confidence figures.

Field names follow OpenAI's verbose_json so the API can return them as they are, and later stages (sections,
documents) can flag low-confidence passages for the clinician instead of trusting them silently.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float
    pieces: int = Field(1, ge=1, description="subword tokens spelling it: several for a rare or made-up word")


class TimeSpan(BaseModel):
    start: float
    end: float


class Segment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None


class Transcript(BaseModel):
    text: str
    language: str
    language_probability: float
    duration_s: float = Field(description="length of the audio, in seconds")
    segments: list[Segment]
    model: str
    model_revision: str


class TranscribeOptions(BaseModel):
    """Per-request decoding options; defaults come from Settings, a request may override some."""

    language: str | None = "en"
    beam_size: int = Field(5, ge=1, le=20)
    # None = Whisper's fallback schedule (0.0 .. 1.0, raised when a pass looks like a loop); a number = that only.
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    initial_prompt: str | None = None
    hotwords: str | None = None
    word_timestamps: bool = False
    vad_filter: bool = True
    # A cap on the tokens one window may produce: a live re-decode sized to its audio, so a greedy pass that falls
    # into a repetition loop stops early instead of costing seconds (None: Whisper's own limit).
    max_new_tokens: int | None = Field(None, ge=1, le=200)
