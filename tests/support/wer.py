"""Word error rate with the normalisation speech evaluations need: case, punctuation and number words.

Synthetic voices read "58" as "fifty eight" and Whisper writes "58-year-old"; both sides are normalised to
digits so the figure measures recognition, not spelling conventions.
"""

from __future__ import annotations

import re

_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}


def normalise(text: str) -> list[str]:
    text = text.lower().replace("%", " percent").replace("-", " ")
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep decimal points only
    words = re.sub(r"[^a-z0-9. ]", " ", text).split()
    return _numbers_to_digits(words)


def _numbers_to_digits(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        value, j = _read_number(words, i)
        if j == i:
            out.append(words[i])
            i += 1
            continue
        if j + 1 < len(words) and words[j] == "point" and words[j + 1] in _SMALL:
            out.append(f"{value}.{_SMALL[words[j + 1]]}")
            i = j + 2
        else:
            out.append(str(value))
            i = j
    return out


def _read_number(words: list[str], i: int) -> tuple[int, int]:
    total, current, j = 0, 0, i
    while j < len(words):
        w = words[j]
        if w in _SMALL:
            current += _SMALL[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred" and j > i:
            current *= 100
        elif w == "thousand" and j > i:
            total, current = total + current * 1000, 0
        else:
            break
        j += 1
    return total + current, j


def wer(reference: str, hypothesis: str) -> float:
    ref = normalise(reference)
    return edits(ref, normalise(hypothesis)) / max(len(ref), 1)


def edits(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance."""
    previous = list(range(len(hyp) + 1))
    for r, ref_word in enumerate(ref, start=1):
        current = [r]
        for h, hyp_word in enumerate(hyp, start=1):
            current.append(min(previous[h] + 1, current[h - 1] + 1, previous[h - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]
