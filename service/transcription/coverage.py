"""Speech the decoder heard nothing in. Whisper can skip a stretch of speech (seen: a 30 s window closed without
a final timestamp, and "No known drug allergies" was gone); the voice activity detector still hears speech there.
Spans of detected speech with no decoded word in them are reported, so the clinician can listen to exactly
those seconds: a dropped sentence is found at review, not after signing. Run for dictations only (the
OpenAI-compatible endpoint has nobody to flag to), and only with word timestamps."""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from service.audio import SAMPLE_RATE
from service.transcription.transcript import TimeSpan, Transcript

_PAD_S = 0.25  # a word's own edges are fuzzy
_MIN_GAP_S = 1.0  # shorter unheard speech is a breath or a click more often than a word
_VAD = VadOptions(min_silence_duration_ms=300, speech_pad_ms=100)


def unheard(samples: np.ndarray, transcript: Transcript) -> list[TimeSpan]:
    words = [w for s in transcript.segments for w in (s.words or [])]
    found = []
    for chunk in get_speech_timestamps(samples, _VAD):
        start, end = chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE
        covered_to = start
        for word in words:
            if word.end + _PAD_S < covered_to or word.start - _PAD_S > end:
                continue
            if word.start - _PAD_S - covered_to >= _MIN_GAP_S:
                found.append(TimeSpan(start=round(covered_to, 2), end=round(word.start - _PAD_S, 2)))
            covered_to = max(covered_to, word.end + _PAD_S)
        if end - covered_to >= _MIN_GAP_S:
            found.append(TimeSpan(start=round(covered_to, 2), end=round(end, 2)))
    return found
