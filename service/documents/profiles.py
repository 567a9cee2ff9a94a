"""The StructureDefinitions we publish (fhir_profiles/), under the configured canonical base.

The JSON files carry the default base; an organization that sets ``fhir.profile_base`` publishes them with
``fhir-scribe profiles --out DIR`` so the profiles' urls match the ``meta.profile`` of every resource written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "fhir_profiles"
DEFAULT_BASE = "https://fhir-scribe.org/fhir/StructureDefinition"


def load_profiles(base: str = DEFAULT_BASE) -> list[dict[str, Any]]:
    profiles = []
    for path in sorted(PROFILES_DIR.glob("StructureDefinition-*.json")):
        text = path.read_text().replace(DEFAULT_BASE, base.rstrip("/"))
        profiles.append(json.loads(text))
    return profiles
