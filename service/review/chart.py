"""Checks of the note against the patient's chart, for the clinician's review. They point; they never change a word.

- unit-symbol: the engine wrote a unit as a symbol ("75mg") where the clinician spoke a word. Rendering a spoken
  unit is where micrograms became mg in our measurements, so each symbol is shown for a second look.
- unit-vs-chart: a dose right after a chart drug's name whose unit class differs from every dose of that drug in
  the chart (levothyroxine "75 mg" against an order in micrograms).
- drug-sound-alike: one to three words that sound and are spelled like a chart drug's name but are not it
  ("Listen April" for lisinopril, "apixiban" for apixaban).
- dose-vs-chart: a dose after a chart drug's name (or its sound-alike) that none of the chart's doses of that drug
  has ("atorvastatin 14 milligrams" against a 40 mg order). A dose change may be intended: the flag says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import isclose

import jellyfish
from rapidfuzz.distance import Indel, Levenshtein
from text_to_num import alpha2digit

from service.config import ReviewSettings
from service.review.flags import ReviewFlag
from service.vocabulary.models import Term
from service.vocabulary.terms import amount
from service.vocabulary.units import DOSE, SYMBOLS, unit_class

_NEAR_DOSE = 40  # characters between a drug's name and its dose (unit-vs-chart)
# Words, numbers ("12.5", "1,000") and sentence ends; a span of words never crosses a number or a sentence end.
_TOKEN = re.compile(r"(?P<word>[A-Za-z]+(?:['-][A-Za-z]+)*)|(?P<number>\d+(?:,\d{3})*(?:[.,]\d+)?%?)|(?P<stop>[.;:?!])")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_MOST_WORDS = 3  # Whisper splits a long name into two or three words ("hydroclarithy azide")
_LENGTHS = (0.75, 1.35)  # span letters / name letters: a short word is never a long name, nor a phrase a short one
_SHORTEST_NAME = 5  # letters; a shorter name sounds like too many ordinary words to compare
# A name shorter than this many letters has few sounds, so a chance likeness in ordinary words scores high
# ("cold in" ~ codeine, "sprain" ~ aspirin); each missing letter costs this much of the score.
_SHORT_NAME, _SHORT_COST = 9, 0.02
# Where a drug's name is expected (a dose follows, or a cue word precedes), a likeness this much lower is enough:
# measured, misheard names there scored 0.74-0.76 ("coding" after "allergies" for codeine, "hydrochlorophilic"
# before "12.5" for hydrochlorothiazide), while ordinary prose in those places stays below (docs/benchmarks.md).
_IN_PLACE_EASING = 0.06
_DRUG_CUES = {"medications", "medication", "meds", "allergies", "allergy", "allergic", "start", "started", "starting",
              "continue", "continued", "increase", "increased", "decrease", "decreased", "reduce", "stop", "stopped",
              "hold", "held", "takes", "taking", "prescribe", "prescribed", "restart", "resume", "switch"}
_DOSE_WINDOW = 4  # words after a drug's name where its dose may start ("metoprolol succinate fifty")
_NOT_DOSE = {  # a number followed by one of these is not a dose ("continue metformin for three months")
    "second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks", "month", "months",
    "year", "years", "year-old", "time", "times", "tablet", "tablets", "capsule", "capsules", "pill", "pills",
    "puff", "puffs", "drop", "drops", "percent", "refill", "refills", "dose", "doses", "o'clock", "am", "pm",
}
# A bare number (no unit) after one of these is a date, a time or a count, not a dose ("lisinopril since 2019")
_NOT_BEFORE_BARE = {"since", "in", "on", "at", "for", "from", "by", "until", "after", "before", "of", "every", "per"}
_MASS = {"microgram": 0.001, "milligram": 1.0, "gram": 1000.0}  # in milligrams: one dimension, three units
_SHORT_UNIT = {"microgram": "mcg", "milligram": "mg", "gram": "g", "millilitre": "mL", "unit": "units",
               "milliequivalent": "mEq"}


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    text: str
    kind: str  # word, number or stop


@dataclass(frozen=True)
class _Sounds:
    """How a name or a span sounds and is spelled, with the spaces gone (names are heard across word breaks)."""

    letters: str
    metaphone: str
    nysiis: str

    @classmethod
    def of(cls, text: str) -> _Sounds:
        letters = re.sub(r"[^a-z]", "", text.lower())
        return cls(letters, jellyfish.metaphone(letters), jellyfish.nysiis(letters))


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    term: Term


def chart_flags(text: str, terms: list[Term], settings: ReviewSettings) -> list[ReviewFlag]:
    """Every chart check's flags for one note, in reading order."""
    units = _units_against_chart(text, terms)
    tokens = [_Token(m.start(), m.end(), m.group(), m.lastgroup or "") for m in _TOKEN.finditer(text)]
    named = mentions(text, terms)
    alike = _sound_alikes(tokens, [t for t in terms if t.is_drug], named, settings.sound_alike_min)
    drugs = sorted([m for m in named if m.term.is_drug] + alike, key=lambda m: m.start)
    flags = _unit_symbols(text) + units + [_sound_alike_flag(text, m) for m in alike] + _doses_against_chart(
        text, tokens, drugs, {f.start for f in units})
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


def mentions(text: str, terms: list[Term]) -> list[Mention]:
    """Where the note says a chart term as the chart spells it (any case): never a sound-alike of anything. Of
    names said at one place, the longest ("insulin glargine", not "insulin") is the one meant."""
    said = sorted((Mention(m.start(), m.end(), term) for term in terms
                   for m in re.finditer(rf"(?<![A-Za-z]){re.escape(term.name)}(?![A-Za-z])", text, re.IGNORECASE)),
                  key=lambda m: (m.start, -m.end))
    kept: list[Mention] = []
    for mention in said:
        if not kept or mention.start >= kept[-1].end:
            kept.append(mention)
    return kept


def _sound_alikes(tokens: list[_Token], drugs: list[Term], named: list[Mention], least: float) -> list[Mention]:
    """The best-scoring spans of one to three words that are like a chart drug's name, none overlapping another
    or a chart term the note already says right."""
    names = [(term, _Sounds.of(term.name)) for term in drugs]
    names = [(term, sounds) for term, sounds in names if len(sounds.letters) >= _SHORTEST_NAME]
    found = []
    for start, end, words, in_place in _spans(tokens):
        if any(start < m.end and m.start < end for m in named):
            continue
        needed = least - _IN_PLACE_EASING if in_place else least
        heard = _Sounds.of(words)
        for term, sounds in names:
            if set(words.lower().split()) <= set(term.name.lower().split()):
                continue  # part of the name, as the chart spells it ("vitamin" of "vitamin d")
            if _LENGTHS[0] <= len(heard.letters) / len(sounds.letters) <= _LENGTHS[1]:
                if (score := likeness(heard, sounds)) >= needed:
                    found.append((score, end - start, Mention(start, end, term)))
    chosen: list[Mention] = []
    for _score, _length, mention in sorted(found, key=lambda f: (-f[0], -f[1], f[2].start)):
        if not any(mention.start < c.end and c.start < mention.end for c in chosen):
            chosen.append(mention)
    return sorted(chosen, key=lambda m: m.start)


def _spans(tokens: list[_Token]) -> list[tuple[int, int, str, bool]]:
    """(start, end, words, in a drug's place) of every run of one to three words with no number or sentence end
    inside."""
    spans = []
    for i, first in enumerate(tokens):
        for n, last in enumerate(tokens[i:i + _MOST_WORDS], start=1):
            if last.kind != "word":
                break
            spans.append((first.start, last.end, " ".join(t.text for t in tokens[i:i + n]),
                          _in_drug_place(tokens, i, i + n)))
    return spans


def _in_drug_place(tokens: list[_Token], first: int, after: int) -> bool:
    """Words where a drug's name goes: a dose follows ("hydrochlorophilic 12.5 milligrams"), or a cue comes just
    before ("allergies coding", "start met forming")."""
    follows = tokens[after] if after < len(tokens) else None
    before = tokens[first - 1].text.lower() if first else ""
    return (follows is not None and follows.kind == "number") or before in _DRUG_CUES


def likeness(heard: _Sounds, name: _Sounds) -> float:
    """0..1: half spelling (Indel similarity of the letters: how Whisper spells what it half-heard), half sound
    (Levenshtein similarity of the Metaphone and NYSIIS keys, averaged: one key alone lets chance collisions
    through, e.g. Metaphone gives 'kidney' and 'codeine' the same key). Short names pay a little per missing
    letter, since a chance likeness is likelier the fewer sounds a name has."""
    spelling = Indel.normalized_similarity(heard.letters, name.letters)
    sound = (Levenshtein.normalized_similarity(heard.metaphone, name.metaphone)
             + Levenshtein.normalized_similarity(heard.nysiis, name.nysiis)) / 2
    return (spelling + sound) / 2 - _SHORT_COST * max(0, _SHORT_NAME - len(name.letters))


def _sound_alike_flag(text: str, mention: Mention) -> ReviewFlag:
    heard = text[mention.start:mention.end]
    return ReviewFlag(kind="drug-sound-alike", start=mention.start, end=mention.end, text=heard,
                      message=f"'{heard}' sounds like {mention.term.name} (in the chart): check the drug name")


def _doses_against_chart(text: str, tokens: list[_Token], drugs: list[Mention], skip: set[int]) -> list[ReviewFlag]:
    """A dose after each drug mention (before the next drug and the sentence's end) that none of the chart's doses
    of that drug is. Where unit-vs-chart already flagged the mention, its unit says enough."""
    flags = []
    for i, mention in enumerate(drugs):
        if not mention.term.doses or mention.start in skip:
            continue
        until = drugs[i + 1].start if i + 1 < len(drugs) else len(text)
        dose = _dose([t for t in tokens if mention.end <= t.start and t.end <= until])
        if dose is None or _agrees(dose, mention.term.doses) is not False:
            continue
        flags.append(ReviewFlag(
            kind="dose-vs-chart", start=mention.start, end=dose.end, text=text[mention.start:dose.end],
            message=f"{mention.term.name}: {text[dose.start:dose.end]} here; the chart has "
                    f"{_described(mention.term.doses)}. If the dose was changed, this is expected; otherwise check "
                    f"it against the recording"))
    return flags


@dataclass(frozen=True)
class _Dose:
    value: float
    unit: str | None  # its class; None when no unit was said ("metoprolol fifty")
    start: int
    end: int


def _dose(after: list[_Token]) -> _Dose | None:
    """The first number in the few words after a name, with its unit if one follows; None when there is none or
    it is something else ("for three days", "2 tablets", "98%", "since 2019")."""
    for i, token in enumerate(after[:_DOSE_WINDOW]):
        if token.kind == "stop":
            return None
        read = _number(after, i)
        if read is None:
            continue
        value, next_word = read
        following = after[next_word].text.lower() if next_word < len(after) else ""
        unit = unit_class(following)
        bare_after = after[i - 1].text.lower() if i and unit is None else ""
        if following in _NOT_DOSE or token.text.endswith("%") or bare_after in _NOT_BEFORE_BARE:
            return None
        return _Dose(value, unit, token.start, after[next_word if unit else next_word - 1].end)
    return None


def _number(tokens: list[_Token], i: int) -> tuple[float, int] | None:
    """The number starting at tokens[i], as digits or spoken ("twelve point five"), and the index after it."""
    if tokens[i].kind == "number":
        return amount(tokens[i].text.rstrip("%")), i + 1
    if tokens[i].kind != "word" or not _DIGITS.fullmatch(alpha2digit(tokens[i].text, "en", threshold=0)):
        return None
    for j in range(min(len(tokens), i + 6), i, -1):  # the longest run of words that reads as one number
        words = tokens[i:j]
        spoken = alpha2digit(" ".join(t.text for t in words), "en", threshold=0)
        if all(t.kind == "word" for t in words) and _DIGITS.fullmatch(spoken):
            return float(spoken), j
    return None


def _agrees(dose: _Dose, doses: frozenset[tuple[float, str]]) -> bool | None:
    """Whether the chart has this dose: across units of one dimension (0.075 mg is 75 micrograms), or, with no
    unit said, as an amount in the chart's own units. None: the chart has no dose in that dimension to compare."""
    if dose.unit is None:
        return any(isclose(dose.value, chart) for chart, _ in doses)
    if dose.unit in _MASS:
        same = [chart * _MASS[unit] for chart, unit in doses if unit in _MASS]
        said = dose.value * _MASS[dose.unit]
    else:
        same = [chart for chart, unit in doses if unit == dose.unit]
        said = dose.value
    return any(isclose(said, chart) for chart in same) if same else None


def _described(doses: frozenset[tuple[float, str]]) -> str:
    """The chart's doses, each amount once, in its plainest form (75 mcg rather than 0.075 mg)."""
    shown: dict[tuple[str, float], str] = {}
    for value, unit in sorted(doses, key=lambda d: (d[0] < 1, d[0])):
        key = ("mass", round(value * _MASS[unit], 9)) if unit in _MASS else (unit, value)
        shown.setdefault(key, f"{value:g} {_SHORT_UNIT.get(unit, unit)}")
    return " or ".join(shown.values())
