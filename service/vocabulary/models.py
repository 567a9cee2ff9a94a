"""What the vocabulary stage hands on: the chart's terms (request-lived, PHI) and what the draft may say about
them (counts and flags, for the clinician)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

SOURCES = ("MedicationRequest", "MedicationStatement", "AllergyIntolerance", "Condition")
DRUG_SOURCES = {"MedicationRequest", "MedicationStatement", "AllergyIntolerance", "static"}

LookupStatus = Literal["applied", "empty", "off", "no-scope", "failed", "timed-out"]


@dataclass(frozen=True)
class Term:
    name: str  # as the engine should hear it: "apixaban", "Eliquis", "atrial fibrillation"
    source: str  # resource type it came from, or "static" (settings)
    unit_classes: frozenset[str] = frozenset()  # of the chart's doses, for drugs
    # The chart's dose amounts, for drugs: (amount, unit class), e.g. (75.0, "microgram") from an order and
    # (0.075, "milligram") from its product's label. Review compares a dictated dose with these.
    doses: frozenset[tuple[float, str]] = frozenset()

    @property
    def is_drug(self) -> bool:
        return self.source in DRUG_SOURCES


@dataclass
class ChartVocabulary:
    status: LookupStatus
    terms: list[Term] = field(default_factory=list)
    lookup_ms: float | None = None
    reason: str | None = None  # a problem slug or a fixed phrase; never PHI


class VocabularyUse(BaseModel):
    """How the chart helped this transcription; counts only (the terms themselves are PHI)."""

    status: LookupStatus = Field(description="applied; empty (nothing in the chart); off (settings); no-scope (the "
                                             "token may not read any source); failed / timed-out (transcribed "
                                             "unbiased)")
    terms: int = Field(0, description="terms given to the engine")
    by_source: dict[str, int] = Field(default_factory=dict, description="terms per resource type (or 'static')")
    engine: Literal["hotwords", "initial_prompt"] | None = None
    lookup_ms: float | None = None
    reason: str | None = None
