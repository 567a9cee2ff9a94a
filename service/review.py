"""Review flags: what the clinician should check before the note is signed. They point at the text (offsets in
the draft's text) and explain; they never change a word. Raised by the stages that can tell: the transcription
(speech with no words) and the vocabulary (doses and drug names against the chart)."""

from __future__ import annotations

import re
from bisect import bisect_right
from difflib import SequenceMatcher
from typing import Literal

from pydantic import BaseModel, Field

from service.transcription.transcript import TimeSpan, Transcript


_WORD = re.compile(r"\S+")


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
    flags: list[ReviewFlag] = []
    if not unheard:
        return flags
    carried = _word_ends(transcript.text, text)
    words = [w for s in transcript.segments for w in (s.words or [])]
    for span in unheard:
        before = [w for w in words if w.end <= span.start + 0.5][-3:]
        said = "".join(w.word for w in before).strip()
        at = _carry(carried, _end_of(transcript.text, said), len(text)) if said else 0
        flags.append(ReviewFlag(kind="possible-omission", start=max(at - len(said), 0), end=at,
                                text=text[max(at - len(said), 0):at],
                                message=f"speech at {_clock(span.start)}-{_clock(span.end)} gave no words: listen "
                                        f"to the recording there, something may be missing after this"))
    return flags


def _end_of(transcript: str, said: str) -> int:
    found = transcript.find(said)
    return found + len(said) if found >= 0 else 0


def _carry(carried: tuple[list[int], list[int]], offset: int, length: int) -> int:
    """``offset`` in the transcript carried over to the note: from the last shared word ending at or before it."""
    ends, targets = carried
    i = bisect_right(ends, offset) - 1
    return min(targets[i] + (offset - ends[i]) if i >= 0 else offset, length)


def _word_ends(source: str, target: str) -> tuple[list[int], list[int]]:
    """Where each word of ``source`` ends in ``target`` (the same text, lightly edited by dictation commands),
    for the words the two share. Aligned word by word, once per draft: a character-level alignment per flag was
    quadratic (measured 142 s for a 50,000-character transcript)."""
    ours = [(m.end(), m.group()) for m in _WORD.finditer(source)]
    theirs = [(m.end(), m.group()) for m in _WORD.finditer(target)]
    matcher = SequenceMatcher(None, [w for _, w in ours], [w for _, w in theirs], autojunk=False)
    pairs = [(ours[a + k][0], theirs[b + k][0]) for a, b, size in matcher.get_matching_blocks() for k in range(size)]
    return [s for s, _ in pairs], [t for _, t in pairs]


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"
