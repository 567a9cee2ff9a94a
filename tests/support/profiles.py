"""Checks a resource against our own StructureDefinitions (fhir_profiles/) without a FHIR server: invariants
(FHIRPath, evaluated by fhirpathpy), minimum cardinalities, fixed and pattern values of the differential.
HAPI does the full job in the HAPI suite; this keeps every test that sees a resource honest about the profile."""

from __future__ import annotations

from typing import Any

from fhirpathpy import evaluate

from service.documents.profiles import load_profiles

PROFILES = {p["type"]: p for p in load_profiles()}


def _values(resource: dict[str, Any], path: str) -> list[Any]:
    values: list[Any] = [resource]
    for step in path.split(".")[1:]:
        nxt: list[Any] = []
        for value in values:
            child = value.get(step) if isinstance(value, dict) else None
            nxt.extend(child if isinstance(child, list) else [] if child is None else [child])
        values = nxt
    return values


def _matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(v, value.get(k)) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(p, v) for v in value) for p in pattern)
    return pattern == value


def violations(resource: dict[str, Any]) -> list[str]:
    profile = PROFILES[resource["resourceType"]]
    found = []
    for element in profile["differential"]["element"]:
        path = element["path"]
        for rule in element.get("constraint", []):
            if evaluate(resource, rule["expression"]) != [True]:
                found.append(f"{rule['key']}: {rule['human']}")
        parent_count = len(_values(resource, path.rsplit(".", 1)[0])) if "." in path else 1
        values = _values(resource, path)
        if "min" in element and parent_count and len(values) < element["min"] * parent_count:
            found.append(f"{path}: fewer than {element['min']}")
        if element.get("max") not in (None, "*") and len(values) > int(element["max"]) * max(parent_count, 1):
            found.append(f"{path}: more than {element['max']}")
        for key in [k for k in element if k.startswith(("fixed", "pattern"))]:
            if not all(_matches(element[key], v) for v in values):
                found.append(f"{path}: does not match {key}")
    return found
