"""Speech the engine gave no words for (see service.transcription.coverage): a flag on the last words decoded
before each stretch of it, carrying that stretch's seconds so the clinician listens to exactly what is missing."""

from __future__ import annotations

from service.review.flags import HeardWord, ReviewFlag, clock
from service.transcription.transcript import TimeSpan


def omission_flags(words: list[HeardWord], unheard: list[TimeSpan], text: str) -> list[ReviewFlag]:
    flags: list[ReviewFlag] = []
    for span in unheard:
        before = [w for w in words if w.audio_end <= span.start + 0.5][-3:]
        start, end = (before[0].start, before[-1].end) if before else (0, 0)
        flags.append(ReviewFlag(kind="possible-omission", start=start, end=end, text=text[start:end],
                                message=f"speech at {clock(span.start)}-{clock(span.end)} gave no words: listen "
                                        f"to the recording there, something may be missing after this",
                                audio_start=span.start, audio_end=span.end))
    return flags
