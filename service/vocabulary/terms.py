"""Names from FHIR resources, as a speech engine should hear them: 'Levothyroxine Sodium 0.075 MG Oral Tablet
[Synthroid]' gives 'levothyroxine' and 'Synthroid'; 'Essential hypertension (disorder)' gives 'essential
hypertension'. Pure functions over resource JSON."""

from __future__ import annotations

import re
from typing import Any

from service.vocabulary.units import DOSE, unit_class

# Words of a drug product's description that are not its name (RxNorm-style displays).
_NOT_NAME = {
    "oral", "tablet", "tablets", "capsule", "capsules", "solution", "suspension", "injection", "injectable",
    "extended", "delayed", "release", "er", "xr", "sr", "dr", "film", "coated", "chewable", "topical", "cream",
    "ointment", "patch", "inhaler", "inhalation", "powder", "prefilled", "syringe", "pen", "pack", "disintegrating",
    "hydrochloride", "hcl", "sodium", "potassium", "calcium", "magnesium", "maleate", "besylate", "succinate",
    "tartrate", "mesylate", "citrate", "sulfate", "acetate", "fumarate", "hyclate", "monohydrate", "propionate",
    "dipropionate", "furoate", "bromide", "hydrobromide", "bitartrate", "dihydrate", "trihydrate",
}
_SALTS = {"sodium", "potassium", "calcium", "magnesium"}
_BRAND = re.compile(r"\[([^\]]+)\]")
_QUALIFIER = re.compile(r"\([^)]*\)")


def concept_names(concept: dict[str, Any] | None, *, product: bool) -> list[str]:
    """The names in a CodeableConcept (text first, then codings' displays), brands after generics. A product
    (a drug, an allergy's substance) loses its strength and form; a problem keeps its numbers ('type 2')."""
    if not concept:
        return []
    found: list[str] = []
    for label in [concept.get("text"), *(c.get("display") for c in concept.get("coding", []))]:
        if isinstance(label, str) and label.strip():
            found.extend(label_names(label, product=product))
    return found


def label_names(label: str, *, product: bool = True) -> list[str]:
    brands = [b.strip() for b in _BRAND.findall(label)]
    plain = _QUALIFIER.sub(" ", _BRAND.sub(" ", label))
    if not product:
        return [n for n in [" ".join(plain.split()).lower(), *brands] if n]
    plain = re.split(r"\d", plain, maxsplit=1)[0]  # the strength and form follow the first number
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", plain)
    # Salt and form words go, except a salt as the first word ("Potassium Chloride" is the drug).
    kept = [w for i, w in enumerate(words) if w.lower() not in _NOT_NAME or (i == 0 and w.lower() in _SALTS)]
    return [n for n in [" ".join(kept).lower(), *brands] if n]


def label_unit_classes(label: str | None) -> set[str]:
    return {c for _, unit in DOSE.findall(label or "") if (c := unit_class(unit))}


def label_doses(label: str | None) -> set[tuple[float, str]]:
    """The strengths in a product's label: 'Levothyroxine Sodium 0.075 MG Oral Tablet' gives (0.075, milligram).
    A per-volume denominator ('1.5 MG/0.5ML') is what the dose comes in, not a dose, so it is left out."""
    text = label or ""
    found = set()
    for match in DOSE.finditer(text):
        kind = unit_class(match.group(2))
        if kind is not None and not text[:match.start()].rstrip().endswith("/"):
            found.add((amount(match.group(1)), kind))
    return found


def amount(written: str) -> float:
    """'1,000' is a thousand (a thousands separator); '0,5' is a half (a decimal comma)."""
    if re.fullmatch(r"\d{1,3}(,\d{3})+", written):
        return float(written.replace(",", ""))
    return float(written.replace(",", "."))


def dose_unit_classes(resource: dict[str, Any]) -> set[str]:
    """Unit classes of a MedicationRequest/Statement's doses (dosage quantities and strengths in its labels)."""
    found: set[str] = set()
    for quantity in _dose_quantities(resource):
        for unit in (quantity.get("code"), quantity.get("unit")):
            if (c := unit_class(unit)) is not None:
                found.add(c)
                break
    return found


def dose_amounts(resource: dict[str, Any]) -> set[tuple[float, str]]:
    """(amount, unit class) of a MedicationRequest/Statement's dose quantities; one without a value or a known
    unit cannot be compared with a dictated dose, so it is left out."""
    found = set()
    for quantity in _dose_quantities(resource):
        value = quantity.get("value")
        kind = unit_class(quantity.get("code")) or unit_class(quantity.get("unit"))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and kind is not None:
            found.add((float(value), kind))
    return found


def _dose_quantities(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """doseQuantity of every dosage: dosageInstruction (a request) and dosage (a statement)."""
    return [dose_rate.get("doseQuantity") or {}
            for dosage in resource.get("dosageInstruction", []) + resource.get("dosage", [])
            for dose_rate in dosage.get("doseAndRate", [])]
