"""SMART scopes, v1 and v2, reduced to what can be asked of them: may this token do X to resource type Y?

v2: ``patient/Observation.rs``, ``user/*.cruds``, ``system/DocumentReference.c`` (letters in c r u d s order,
optionally followed by ``?param=value`` restrictions, which fhir-scribe treats as not granting anything it cannot
check). v1: ``.read`` = r+s, ``.write`` = c+u+d, ``.*`` = all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCOPE = re.compile(r"^(?P<context>patient|user|system)/(?P<resource>\*|[A-Z][A-Za-z]+)\."
                    r"(?P<perm>read|write|\*|c?r?u?d?s?)(?P<query>\?.*)?$")
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource: str  # a resource type or *
    permissions: frozenset[str]


def parse(scope: str | None) -> list[ResourceScope]:
    """Resource scopes found in a space-separated scope string; others (openid, launch, ...) are ignored here."""
    found = []
    for token in (scope or "").split():
        match = _SCOPE.match(token)
        if not match or match["query"] or not match["perm"]:
            continue  # restricted v2 scopes (with ?query) grant nothing fhir-scribe cannot enforce
        perm = match["perm"]
        found.append(ResourceScope(match["context"], match["resource"], _V1.get(perm, frozenset(perm))))
    return found


def allows(scopes: list[ResourceScope], resource: str, permission: str) -> bool:
    return any(s.resource in ("*", resource) and permission in s.permissions for s in scopes)


def patient_scoped(scopes: list[ResourceScope]) -> bool:
    return any(s.context == "patient" for s in scopes)
