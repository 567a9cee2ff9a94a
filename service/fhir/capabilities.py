"""Can this FHIR server take fhir-scribe's notes? Read from its CapabilityStatement (and a read, to prove the
credentials work) before a first dictation: `fhir-scribe check`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import ScribeError
from service.fhir.client import FhirClient


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


async def check_server(client: FhirClient, patient: str | None = None) -> list[Check]:
    try:
        response = await client.send("GET", "metadata", retry=True)
    except ScribeError as failure:
        return [Check("reachable", False, failure.detail)]
    if response.status_code != 200:
        return [Check("reachable", False, client.error_for(response).detail)]
    statement: dict[str, Any] = response.json()
    rest = (statement.get("rest") or [{}])[0]
    resources = {r.get("type"): r for r in rest.get("resource", [])}
    version = statement.get("fhirVersion", "?")
    software = (statement.get("software") or {}).get("name", "unknown software")
    checks = [
        Check("reachable", True, f"{client.base_url} ({software}, FHIR {version})"),
        Check("FHIR R4", version.startswith("4.0"), f"fhirVersion {version}"),
        Check("transactions", any(i.get("code") == "transaction" for i in rest.get("interaction", [])),
              "note + AuditEvent in one atomic transaction (else two requests, reported as not atomic)",
              required=False),
    ]
    doc = resources.get("DocumentReference", {})
    checks.append(Check("DocumentReference create", _interaction(doc, "create"), "writes the note"))
    checks.append(Check("conditional create", bool(doc.get("conditionalCreate")),
                        "idempotent writes: the identifier decides whether a note already exists"))
    checks.append(Check("search by identifier", _search_param(doc, "identifier"),
                        "finds a note whose write timed out, before retrying"))
    checks.append(Check("AuditEvent create", _interaction(resources.get("AuditEvent", {}), "create"),
                        "audit of every note written"))
    for kind in ("Patient", "Encounter"):
        checks.append(Check(f"{kind} read", _interaction(resources.get(kind, {}), "read"),
                            "the dictation's context is checked before writing"))
    for kind in ("MedicationRequest", "MedicationStatement", "AllergyIntolerance", "Condition"):
        checks.append(Check(f"{kind} search by patient", _interaction(resources.get(kind, {}), "search-type")
                            and _search_param(resources.get(kind, {}), "patient"),
                            "the patient's chart vocabulary (else transcription is unbiased)", required=False))
    task = resources.get("Task", {})
    checks.append(Check("Task create, update, search", all(_interaction(task, c) for c in ("create", "update",
                                                                                           "search-type")),
                        "Subscription jobs are tracked as Tasks (only needed with subscriptions.secret)",
                        required=False))
    if patient:
        try:
            found = await client.read("Patient", patient)
            checks.append(Check("credentials", found is not None,
                                f"read Patient/{patient}" + ("" if found else ": not found")))
        except ScribeError as failure:
            checks.append(Check("credentials", False, failure.detail))
    return checks


def _interaction(resource: dict[str, Any], code: str) -> bool:
    return any(i.get("code") == code for i in resource.get("interaction", []))


def _search_param(resource: dict[str, Any], name: str) -> bool:
    return any(p.get("name") == name for p in resource.get("searchParam", []))
