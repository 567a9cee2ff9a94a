"""Which words of a transcript are wrong, by its reference text, after Whisper's English normalizer (so "forty"
against "40" or "mg" against "milligrams" is no error): the ground truth review flags are measured against.

Each error (a substituted, inserted or missing word) is given as the set of the transcript's words that a flag
must touch to point at it: the word itself, or for a missing word the words either side of the gap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein
from whisper_normalizer.english import EnglishTextNormalizer

_NORMALIZE = EnglishTextNormalizer()
_NUMBER_WORDS = set("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
                    "hundred thousand".split())
_JOINERS = {"point", "and"}  # "twelve point five", "one hundred and five"


@dataclass(frozen=True)
class Errors:
    reference_words: int
    errors: list[frozenset[int]]  # per error: the transcript words that point at it
    reference_positions: list[int]  # per error: where in the normalized reference it is
    kinds: list[str]  # per error: replace, insert or delete (rapidfuzz's names)


def normalized(text: str) -> list[str]:
    return _NORMALIZE(text).split()


def errors(reference: str, words: list[str]) -> Errors:
    """``words``: the transcript's words in order (as the review stage sees them)."""
    ref = normalized(reference)
    hyp, owner = _tokens(words)
    found, positions, kinds = [], [], []
    for op in Levenshtein.editops(ref, hyp):
        if op.tag == "delete":
            around = set(owner[op.dest_pos - 1]) if op.dest_pos > 0 else set()
            around |= set(owner[op.dest_pos]) if op.dest_pos < len(hyp) else set()
            found.append(frozenset(around))
        else:
            found.append(frozenset(owner[op.dest_pos]))
        positions.append(op.src_pos)
        kinds.append(op.tag)
    return Errors(len(ref), found, positions, kinds)


def _tokens(words: list[str]) -> tuple[list[str], list[tuple[int, ...]]]:
    """Normalized tokens and, for each, the words it came from. Words are normalized one by one, except a run of
    spoken number words, normalized together ("fifty eight" is one token, 58)."""
    tokens: list[str] = []
    owner: list[tuple[int, ...]] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and (_bare(words[j]) in _NUMBER_WORDS or (
                j > i and _bare(words[j]) in _JOINERS and j + 1 < len(words) and _bare(words[j + 1]) in _NUMBER_WORDS)):
            j += 1
        group = tuple(range(i, max(j, i + 1)))
        for token in normalized(" ".join(words[k] for k in group)):
            tokens.append(token)
            owner.append(group)
        i = group[-1] + 1
    return tokens, owner


def _bare(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())
