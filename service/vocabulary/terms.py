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
    "tartrate", "mesylate", "citrate", "sulfate", "acetate", "fumarate", "hyclate", "monohydrate",
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


def dose_unit_classes(resource: dict[str, Any]) -> set[str]:
    """Unit classes of a MedicationRequest/Statement's doses (dosage quantities and strengths in its labels)."""
    found: set[str] = set()
    for dosage in resource.get("dosageInstruction", []) + resource.get("dosage", []):
        for dose_rate in dosage.get("doseAndRate", []):
            quantity = dose_rate.get("doseQuantity") or {}
            for unit in (quantity.get("code"), quantity.get("unit")):
                if (c := unit_class(unit)) is not None:
                    found.add(c)
                    break
    return found
