"""Post-transcription checks for the clinician's review. They point; they never change a word.

- unit-symbol: the engine wrote a unit as a symbol ("75mg") where the clinician spoke a word. Rendering a spoken
  unit is where micrograms became mg in our measurements, so each symbol is shown for a second look.
- unit-vs-chart: a dose right after a chart drug's name whose unit class differs from every dose of that drug in
  the chart (levothyroxine "75 mg" against an order in micrograms).
- drug-near-miss: a word close to a chart drug's name but not it ("apixiban", "carvedilo").
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from service.review import ReviewFlag
from service.vocabulary.models import Term
from service.vocabulary.units import DOSE, SYMBOLS, unit_class

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_NEAR_DOSE = 40  # characters between a drug's name and its dose


def review_flags(text: str, terms: list[Term], near_miss_ratio: float) -> list[ReviewFlag]:
    flags = _unit_symbols(text) + _units_against_chart(text, terms) + _near_misses(text, terms, near_miss_ratio)
    return sorted(flags, key=lambda f: (f.start, f.kind))


def _unit_symbols(text: str) -> list[ReviewFlag]:
    return [ReviewFlag(kind="unit-symbol", start=m.start(), end=m.end(), text=m.group(0),
                       message=f"the speech engine wrote the unit as '{m.group(2)}': check it against the dictation "
                               f"(milligrams and micrograms differ a thousandfold)")
            for m in DOSE.finditer(text) if m.group(2).lower() in SYMBOLS]


def _units_against_chart(text: str, terms: list[Term]) -> list[ReviewFlag]:
    flags = []
    for term in terms:
        if not term.unit_classes:
            continue
        for name in re.finditer(rf"\b{re.escape(term.name)}\b", text, re.IGNORECASE):
            dose = DOSE.search(text, name.end(), name.end() + _NEAR_DOSE)
            written = unit_class(dose.group(2)) if dose else None
            if dose is None or written is None or written in term.unit_classes:
                continue
            chart = " or ".join(sorted(term.unit_classes))
            flags.append(ReviewFlag(kind="unit-vs-chart", start=name.start(), end=dose.end(),
                                    text=text[name.start():dose.end()],
                                    message=f"{term.name}: the dose here is in {written}s; the chart's are in "
                                            f"{chart}s"))
    return flags


def _near_misses(text: str, terms: list[Term], ratio: float) -> list[ReviewFlag]:
    drugs = {t.name.lower(): t.name for t in terms if t.is_drug and " " not in t.name and len(t.name) >= 5}
    flags = []
    for word in _WORD.finditer(text):
        heard = word.group(0).lower()
        if len(heard) < 5 or heard in drugs:
            continue
        close = [name for key, name in drugs.items() if SequenceMatcher(None, heard, key).ratio() >= ratio]
        if close:
            flags.append(ReviewFlag(kind="drug-near-miss", start=word.start(), end=word.end(), text=word.group(0),
                                    message=f"'{word.group(0)}' is close to the chart's {', '.join(close)}: check "
                                            f"the drug name"))
    return flags
