"""Dose units and their classes. A change of class (micrograms -> mg) is a thousandfold dose error, the kind a
speech engine makes when it renders a spoken unit as a symbol."""

from __future__ import annotations

import re

# unit as written (lower case) -> class
UNIT_CLASSES = {
    "mcg": "microgram", "µg": "microgram", "ug": "microgram", "microgram": "microgram", "micrograms": "microgram",
    "mg": "milligram", "milligram": "milligram", "milligrams": "milligram",
    "g": "gram", "gram": "gram", "grams": "gram",
    "ml": "millilitre", "milliliter": "millilitre", "milliliters": "millilitre", "millilitre": "millilitre",
    "millilitres": "millilitre",
    "unit": "unit", "units": "unit", "iu": "unit", "[iu]": "unit", "u": "unit",
    "meq": "milliequivalent", "milliequivalent": "milliequivalent", "milliequivalents": "milliequivalent",
}
# Written as a symbol: the engine chose it, the clinician spoke a word.
SYMBOLS = {"mcg", "µg", "ug", "mg", "g", "ml", "iu", "meq"}

_UNIT = "|".join(sorted((re.escape(u) for u in UNIT_CLASSES if u not in ("u", "[iu]")), key=len, reverse=True))
DOSE = re.compile(rf"(?<![\w.])(\d+(?:[.,]\d+)?)\s?({_UNIT})\b", re.IGNORECASE)


def unit_class(unit: str | None) -> str | None:
    return UNIT_CLASSES.get((unit or "").strip().lower())
