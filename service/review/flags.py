"""What a review flag is, and where the note's words were heard.

A flag points at a span of the draft's text and explains; it never changes a word. It also carries the seconds of
the recording that span was heard in, so the clinician can listen to exactly that (the app plays it from the
browser's own copy of the recording; the Task notes of a Subscription job name the time).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from pydantic import BaseModel, Field

from service.transcription.transcript import Transcript

FlagKind = Literal["low-confidence", "possible-omission", "drug-sound-alike", "dose-vs-chart", "unit-symbol",
                   "unit-vs-chart"]
_TOKEN = re.compile(r"\S+")


class ReviewFlag(BaseModel):
    """Something in the note the clinician should check. Nothing is ever corrected automatically."""

    kind: FlagKind
    start: int = Field(ge=0, description="offset in the draft's text")
    end: int = Field(ge=0)
    text: str = Field(description="the words flagged, as written (for an omission: the words before it)")
    message: str
    audio_start: float | None = Field(None, ge=0, description="where the span was heard in the recording, seconds")
    audio_end: float | None = Field(None, ge=0)


@dataclass(frozen=True)
class HeardWord:
    """One word of the note with what the engine said about it: where it was heard and how sure it was."""

    start: int  # offsets in the note's text
    end: int
    text: str
    audio_start: float
    audio_end: float
    probability: float  # the word's own (product of its tokens' probabilities)
    pieces: int  # subword tokens spelling it: several for a rare or made-up word
    avg_logprob: float  # of the segment it was decoded in
    no_speech_prob: float
    compression_ratio: float


def heard_words(transcript: Transcript, note_text: str) -> list[HeardWord]:
    """The transcript's words placed in the note's text. The note is the transcript lightly edited by dictation
    commands ("new paragraph", "period"), so the two are aligned token by token; a note word with no counterpart
    (a command's output) has no audio and is left out."""
    spoken = [(w, s) for s in transcript.segments for w in (s.words or [])]
    # Whisper's words are the transcript's whitespace tokens (punctuation rides on the word before it); where a
    # word is not found where expected, it is skipped rather than misplaced.
    spans: list[tuple[int, int]] = []
    at = 0
    placed = []
    for word, segment in spoken:
        said = word.word.strip()
        found = transcript.text.find(said, at) if said else -1
        if found < 0 or (found - at > 3 and spans):
            continue
        spans.append((found, found + len(said)))
        placed.append((word, segment))
        at = found + len(said)
    ours = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(transcript.text)]
    theirs = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(note_text)]
    matcher = SequenceMatcher(None, [t for *_, t in ours], [t for *_, t in theirs], autojunk=False)
    carried = {ours[a + k][0]: theirs[b + k] for a, b, size in matcher.get_matching_blocks() for k in range(size)}
    words = []
    for (start, _end), (word, segment) in zip(spans, placed):
        target = carried.get(start)
        if target is None:
            continue
        words.append(HeardWord(start=target[0], end=target[1], text=target[2], audio_start=word.start,
                               audio_end=word.end, probability=word.probability, pieces=word.pieces,
                               avg_logprob=segment.avg_logprob,
                               no_speech_prob=segment.no_speech_prob, compression_ratio=segment.compression_ratio))
    return words


def with_audio(flag: ReviewFlag, words: list[HeardWord]) -> ReviewFlag:
    """The flag with the seconds its span was heard in: from the first word it touches to the last (an omission,
    which points at the words before a gap, already knows its own seconds)."""
    if flag.audio_start is not None or not words:
        return flag
    ends = [w.end for w in words]
    first = bisect_right(ends, flag.start)
    last = bisect_left([w.start for w in words], max(flag.end, flag.start + 1)) - 1
    if first > last:
        return flag
    return flag.model_copy(update={"audio_start": words[first].audio_start, "audio_end": words[last].audio_end})


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"
