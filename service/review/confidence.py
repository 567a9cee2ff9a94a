"""Low-confidence flags: the words the engine itself was unsure of, merged into phrases.

The signal is Whisper's probability for each word (from its word-alignment pass), with a higher bar for a word it
spelled from several subword tokens, calibrated on our speech fixtures against their reference texts
(bench/review.py). Two kinds of words are left out because their probability says
nothing about whether they are right (measured: leaving them out flags a quarter fewer words for the same errors
found):
- a chart term ("apixaban" comes out right at p 0.06: the alignment pass does not see the chart's vocabulary, so
  every rare name looks unsure); the chart's names have their own checks (service.review.chart);
- a spoken section heading the sectioner recognised ("Chief complaint" after a pause scores 0.04).
A segment Whisper itself would call a hallucination (likely no speech and a low average log probability) or a loop
(compression ratio above 2.4) is flagged whole.
"""

from __future__ import annotations

from service.config import ReviewSettings
from service.review.flags import HeardWord, ReviewFlag

_LOOP_COMPRESSION = 2.4  # Whisper's own threshold for a repetitive (looping) decode
_NO_SPEECH = 0.6  # Whisper's no_speech_threshold ...
_NO_SPEECH_LOGPROB = -1.0  # ... with its log_prob_threshold


def low_confidence_flags(words: list[HeardWord], text: str, settings: ReviewSettings,
                         trusted: list[tuple[int, int]] = ()) -> list[ReviewFlag]:
    """``trusted``: spans of ``text`` whose words are not judged by their probability (chart terms, headings)."""
    if settings.low_confidence_below <= 0:
        return []
    unsure = [i for i, word in enumerate(words)
              if _suspect(word) or (word.probability < _bar(word, settings)
                                    and not any(a <= word.start and word.end <= b for a, b in trusted))]
    flags = []
    for run in _phrases(unsure, settings.low_confidence_gap):
        first, last = words[run[0]], words[run[-1]]
        lowest = min(words[i].probability for i in run)
        if any(_suspect(words[i]) for i in run):
            why = "the engine may have made these words up (it heard little speech, or repeated itself)"
        else:
            why = f"the engine was unsure of these words (lowest confidence {lowest:.0%})"
        flags.append(ReviewFlag(kind="low-confidence", start=first.start, end=last.end,
                                text=text[first.start:last.end],
                                message=f"{why}: listen and check them against the recording"))
    return flags


def _bar(word: HeardWord, settings: ReviewSettings) -> float:
    """The probability a word must reach. Higher for a word the engine spelled from several pieces that is not a
    number: a common word is one token, so a multi-token one is rare or made up, and its moderate probability
    ("serracing" 0.61, "mornum" 0.60) hides an error more often (measured: 7 points more errors covered for the
    same share of words flagged)."""
    rare = word.pieces > 1 and not any(c.isdigit() for c in word.text)
    return max(settings.low_confidence_below, settings.low_confidence_rare_below) if rare else \
        settings.low_confidence_below


def _suspect(word: HeardWord) -> bool:
    return word.compression_ratio > _LOOP_COMPRESSION or (
        word.no_speech_prob > _NO_SPEECH and word.avg_logprob < _NO_SPEECH_LOGPROB)


def _phrases(indices: list[int], gap: int) -> list[list[int]]:
    """Flagged words at most ``gap`` words apart, as one phrase: the clinician reads a phrase, not word by word."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i - runs[-1][-1] <= gap + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
