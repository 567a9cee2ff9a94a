"""Review flags: what the clinician should check before the note is signed. They point at the text (offsets in
the draft's text) and explain; they never change a word. Raised by the stages that can tell: the transcription
(speech with no words) and the vocabulary (doses and drug names against the chart)."""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Literal

from pydantic import BaseModel, Field

from service.transcription.transcript import TimeSpan, Transcript


class ReviewFlag(BaseModel):
    """Something in the note the clinician should check. Nothing is ever corrected automatically."""

    kind: Literal["possible-omission", "unit-symbol", "unit-vs-chart", "drug-near-miss"]
    start: int = Field(description="offset in the draft's text")
    end: int
    text: str = Field(description="the words flagged, as written (for an omission: the words before it)")
    message: str


def omission_flags(transcript: Transcript, unheard: list[TimeSpan], text: str) -> list[ReviewFlag]:
    """A flag after the last word decoded before each stretch of unheard speech, placed in ``text`` (the note,
    which dictation commands may have changed slightly from the transcript)."""
    flags = []
    words = [w for s in transcript.segments for w in (s.words or [])]
    for span in unheard:
        before = [w for w in words if w.end <= span.start + 0.5][-3:]
        said = "".join(w.word for w in before).strip()
        at = _position(transcript.text, text, _end_of(transcript.text, said)) if said else 0
        flags.append(ReviewFlag(kind="possible-omission", start=max(at - len(said), 0), end=at,
                                text=text[max(at - len(said), 0):at],
                                message=f"speech at {_clock(span.start)}-{_clock(span.end)} gave no words: listen "
                                        f"to the recording there, something may be missing after this"))
    return flags


def _end_of(transcript: str, said: str) -> int:
    found = transcript.find(said)
    return found + len(said) if found >= 0 else 0


def _position(source: str, target: str, offset: int) -> int:
    """``offset`` in ``source`` carried over to ``target`` (the same text, lightly edited)."""
    for a, b, size in SequenceMatcher(None, source, target, autojunk=False).get_matching_blocks():
        if a <= offset <= a + size:
            return b + (offset - a)
    return min(offset, len(target))


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"
