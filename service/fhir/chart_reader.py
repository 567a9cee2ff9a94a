"""Reading the patient's medications, allergies and problems from the FHIR server, in one round trip and within
a budget: a batch of four searches when the server takes batches, else the four searches at once. A slow or
failing EHR never delays or fails a dictation; it only leaves it unbiased (and the draft says so).

It lives in the fhir stage because it is I/O against the EHR; what the resources mean (names, doses, units) is
the vocabulary stage's pure ``chart_terms``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

from service import metrics
from service.config import VocabularySettings
from service.errors import ScribeError
from service.fhir.client import BatchRefused, FhirClient
from service.logs import event
from service.vocabulary.chart import chart_terms
from service.vocabulary.models import SOURCES, ChartVocabulary, Term

log = logging.getLogger(__name__)

_SEARCHES = {
    "MedicationRequest": {"status": "active", "_include": "MedicationRequest:medication"},
    "MedicationStatement": {"status": "active", "_include": "MedicationStatement:medication"},
    "AllergyIntolerance": {"clinical-status": "active"},
    "Condition": {"clinical-status": "active"},
}


class ChartReader:
    def __init__(self, client: FhirClient, settings: VocabularySettings) -> None:
        self.client = client
        self.settings = settings
        self._batch_refused = False

    async def vocabulary(self, patient: str, readable: Collection[str] | None) -> ChartVocabulary:
        """``readable``: the resource types the caller's token may search (None: no token, auth off). Types it
        may not read are skipped; with none left, no request is made."""
        static = [Term(name, "static") for name in self.settings.static_terms]
        if not self.settings.enabled:
            return ChartVocabulary("off")
        types = [t for t in SOURCES if readable is None or t in readable]
        if not types:
            return _with_static(ChartVocabulary("no-scope"), static)
        started = time.perf_counter()
        try:
            found = await asyncio.wait_for(self._search(patient, types), self.settings.lookup_budget_ms / 1000)
            chart = ChartVocabulary("applied", chart_terms(found))
        except TimeoutError:
            chart = ChartVocabulary("timed-out", reason=f"no answer within {self.settings.lookup_budget_ms} ms")
        except ScribeError as failure:
            chart = ChartVocabulary("failed", reason=failure.slug)
        elapsed = time.perf_counter() - started
        chart.lookup_ms = round(elapsed * 1000, 1)
        metrics.VOCABULARY_LOOKUPS.labels(chart.status).inc()
        metrics.VOCABULARY_SECONDS.observe(elapsed)
        event(log, "vocabulary.lookup", status=chart.status, terms=len(chart.terms), ms=chart.lookup_ms,
              types=len(types))
        return _with_static(chart, static)

    async def _search(self, patient: str, types: list[str]) -> dict[str, list[dict[str, Any]]]:
        queries = {t: {"patient": patient, **_SEARCHES[t], "_count": "100"} for t in types}
        if not self._batch_refused:  # CapabilityStatements rarely say (HAPI takes batches but lists none): ask
            try:
                return await self.client.batch_search(queries)
            except BatchRefused:
                self._batch_refused = True  # a fact about the server, remembered; nothing about the patient
        results = await asyncio.gather(*(self.client.search(t, q, includes=True) for t, q in queries.items()))
        return dict(zip(queries, results))


def _with_static(chart: ChartVocabulary, static: list[Term]) -> ChartVocabulary:
    known = {t.name.lower() for t in chart.terms}
    chart.terms += [t for t in static if t.name.lower() not in known]
    if chart.status == "applied" and not chart.terms:
        chart.status = "empty"
    return chart
