"""What a patient's chart says, as vocabulary: the names (and dose amounts and unit classes) in the
MedicationRequest, MedicationStatement, AllergyIntolerance and Condition resources the fhir stage read. Pure: no
I/O (the reading is service/fhir/chart_reader.py)."""

from __future__ import annotations

from typing import Any

from service.vocabulary.models import SOURCES, Term
from service.vocabulary.terms import concept_names, dose_amounts, dose_unit_classes, label_doses, label_unit_classes


def chart_terms(found: dict[str, list[dict[str, Any]]]) -> list[Term]:
    """Terms in order of relevance (prescribed, then taken, then allergies, then problems; each in the server's
    order), one per name; a drug keeps the unit classes and amounts of all its doses and strengths."""
    included = {f"{r.get('resourceType')}/{r.get('id')}": r for resources in found.values() for r in resources}
    terms: dict[str, Term] = {}
    for source in SOURCES:
        for resource in found.get(source, []):
            if resource.get("resourceType") != source:
                continue  # an _include'd Medication
            for name, units, doses in _names(resource, included):
                key = name.lower()
                if key in terms:
                    known = terms[key]
                    terms[key] = Term(known.name, known.source, known.unit_classes | units, known.doses | doses)
                else:
                    terms[key] = Term(name, source, units, doses)
    return list(terms.values())


_Named = tuple[str, frozenset[str], frozenset[tuple[float, str]]]  # a name, its dose unit classes and amounts


def _names(resource: dict[str, Any], included: dict[str, dict[str, Any]]) -> list[_Named]:
    kind = resource["resourceType"]
    if kind == "Condition":
        return [(n, frozenset(), frozenset()) for n in concept_names(resource.get("code"), product=False)]
    if kind == "AllergyIntolerance":
        concepts = [resource.get("code"), *(r.get("substance") for r in resource.get("reaction", []))]
        return [(n, frozenset(), frozenset()) for c in concepts for n in concept_names(c, product=True)]
    concept = resource.get("medicationCodeableConcept")
    if concept is None:
        reference = (resource.get("medicationReference") or {}).get("reference", "")
        concept = (included.get(reference) or {}).get("code")
    labels = [(concept or {}).get("text"), *(c.get("display") for c in (concept or {}).get("coding", []))]
    units = frozenset(dose_unit_classes(resource) | {u for label in labels for u in label_unit_classes(label)})
    doses = frozenset(dose_amounts(resource) | {d for label in labels for d in label_doses(label)})
    return [(n, units, doses) for n in concept_names(concept, product=True)]
