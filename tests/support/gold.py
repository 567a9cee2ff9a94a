"""Section-boundary evaluation against the hand-written gold set (tests/fixtures/sections)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

GOLD = Path(__file__).resolve().parent.parent / "fixtures" / "sections"
TOLERANCE = 2  # characters: a heading counts as found if it starts within this of the gold start


@dataclass(frozen=True)
class Heading:
    category: str
    start: int


def gold_sections() -> list[dict]:
    return yaml.safe_load((GOLD / "gold_sections.yaml").read_text())


def gold_context() -> list[dict]:
    return yaml.safe_load((GOLD / "gold_context.yaml").read_text())


def locate(text: str, headings: list[list]) -> list[Heading]:
    """Gold headings -> offsets in ``text``, searching forward, honouring each entry's skip count."""
    lowered, position, found = text.lower(), 0, []
    for entry in headings:
        category, phrase, skip = entry[0], entry[1].lower(), entry[2] if len(entry) > 2 else 0
        at = lowered.find(phrase, position)
        for _ in range(skip):
            at = lowered.find(phrase, at + 1)
        if at < 0:
            raise AssertionError(f"gold heading {phrase!r} not found in order")
        found.append(Heading(category, at))
        position = at + len(phrase)
    return found


def score(gold: list[Heading], predicted: list[Heading]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) with one-to-one matching."""
    unmatched = list(predicted)
    tp = 0
    for g in gold:
        match = next((p for p in unmatched if p.category == g.category and abs(p.start - g.start) <= TOLERANCE), None)
        if match is not None:
            unmatched.remove(match)
            tp += 1
    return tp, len(unmatched), len(gold) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
