"""The review stage: where the clinician should look twice before signing, and why. It runs after sections, on
the note's text, with what the transcription said about each word and what the chart says about each drug. It
points and explains; it never changes a word (clinical safety: a wrong correction is worse than a flag)."""

from __future__ import annotations


from service.config import ReviewSettings
from service.review.chart import chart_flags, mentions
from service.review.confidence import low_confidence_flags
from service.review.flags import ReviewFlag, heard_words, with_audio
from service.review.omission import omission_flags
from service.sections.note import StructuredNote
from service.transcription.transcript import TimeSpan, Transcript
from service.vocabulary.models import Term

__all__ = ["ReviewFlag", "review"]


def review(transcript: Transcript, note: StructuredNote, unheard: list[TimeSpan], terms: list[Term],
           settings: ReviewSettings) -> list[ReviewFlag]:
    """Every flag for one draft, in reading order, each with the seconds of the recording it points at."""
    words = heard_words(transcript, note.text)
    flags = (omission_flags(words, unheard, note.text) + chart_flags(note.text, terms, settings)
             + low_confidence_flags(words, note.text, settings, trusted=_trusted(note, terms)))
    return sorted((with_audio(flag, words) for flag in flags), key=lambda f: (f.start, f.kind))


def _trusted(note: StructuredNote, terms: list[Term]) -> list[tuple[int, int]]:
    """Where the words are known from elsewhere: the chart's terms, and the headings the sectioner recognised."""
    headings = [(s.start, s.body_start) for s in note.sections if s.category]
    return headings + [(m.start, m.end) for m in mentions(note.text, terms)]
