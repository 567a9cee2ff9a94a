"""The StructureDefinitions we publish (fhir_profiles/), under the configured canonical base.

The JSON files carry the default base; an organization that sets ``fhir.profile_base`` publishes them with
``fhir-scribe profiles --out DIR`` so the profiles' urls match the ``meta.profile`` of every resource written.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

# fhir_profiles/ is installed as the package data service.profiles (pyproject.toml): found the same way from a
# checkout, a wheel or a container image.
PROFILES_DIR = files("service.profiles")
DEFAULT_BASE = "https://fhir-scribe.org/fhir/StructureDefinition"


def load_profiles(base: str = DEFAULT_BASE) -> list[dict[str, Any]]:
    profiles = []
    for path in sorted((p for p in PROFILES_DIR.iterdir() if p.name.startswith("StructureDefinition-")),
                       key=lambda p: p.name):
        text = path.read_text().replace(DEFAULT_BASE, base.rstrip("/"))
        profiles.append(json.loads(text))
    return profiles
