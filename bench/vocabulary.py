"""Vocabulary biasing: what the patient's chart does for drug names and WER, and what the look-up costs.

    python bench/vocabulary.py [--model tiny.en] [--lookups 50]

A local FHIR server (sekmet-fhir, as `fhir-scribe demo` runs it) is seeded with the charts of
tests/fixtures/speech_meds/charts.yaml. For every dictation there (all eight speech fixtures) the chart is read
with the service's ChartReader, fitted to the engine as the service does, and the dictation transcribed by the
service's Transcriber with and without the bias, in the same run. Reported: per dictation and pooled, drug-name
recall and WER, biased and not; and the look-up's latency over --lookups rounds (median, p95): the delay it can
add before transcription (the service overlaps it with audio decoding; its budget is vocabulary.lookup_budget_ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--lookups", type=int, default=50)
    args = parser.parse_args()

    from service.audio import decode
    from service.config import load_settings
    from service.demo import start_fhir_server, wait_until_ready
    from service.fhir.client import FhirClient
    from service.transcription.engine import Transcriber
    from service.transcription.models import resolve_model
    from service.vocabulary.bias import biased, fitted
    from tests.conftest import free_port
    from tests.support.charts import charted_dictations, drugs_heard
    from tests.support.wer import normalise, wer

    settings = load_settings()
    model = args.model or settings.transcription.model
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    with tempfile.TemporaryDirectory() as work:  # the FHIR server's own scratch space; no audio goes there
        fhir = start_fhir_server(port, Path(work))
        try:
            wait_until_ready(fhir, f"{base}/metadata", "sekmet-fhir")
            dictations = charted_dictations()
            for dictation in dictations:
                dictation.seed(base)
            settings = settings.model_copy(update={"fhir": settings.fhir.model_copy(update={"base_url": base})})
            charts, latencies = asyncio.run(_read_charts(FhirClient(settings.fhir), settings, dictations,
                                                         args.lookups))
        finally:
            fhir.terminate()
            fhir.wait(timeout=10)

    engine = Transcriber(resolve_model(model, settings.transcription.model_cache_dir), settings.transcription)
    totals = {"off": [0, 0.0], "on": [0, 0.0]}
    said = sum(len(d.drugs) for d in dictations)
    words = sum(len(normalise(d.reference)) for d in dictations)
    print(f"model {model}; {len(dictations)} dictations, {said} drug mentions, {words} words")
    print(f"{'dictation':30} {'terms':>5} {'engine':>14} {'drugs off':>9} {'drugs on':>8} {'WER off':>7} {'WER on':>7}")
    for dictation in dictations:
        audio = decode(dictation.audio, settings.audio)
        option, terms = fitted(charts[dictation.name].terms, settings.vocabulary)
        row = {}
        for name, options in (("off", engine.default_options()),
                              ("on", biased(engine.default_options(), option, terms))):
            text = engine.transcribe(audio, options).text
            heard, error = drugs_heard(dictation.drugs, text), wer(dictation.reference, text)
            totals[name][0] += heard
            totals[name][1] += error * len(normalise(dictation.reference))
            row[name] = (heard, error)
        print(f"{dictation.name:30} {len(terms):5} {option or '-':>14} {row['off'][0]:>4}/{len(dictation.drugs):<4} "
              f"{row['on'][0]:>3}/{len(dictation.drugs):<4} {row['off'][1]:7.3f} {row['on'][1]:7.3f}")
    print(f"{'all':30} {'':5} {'':>14} {totals['off'][0]:>4}/{said:<4} {totals['on'][0]:>3}/{said:<4} "
          f"{totals['off'][1] / words:7.3f} {totals['on'][1] / words:7.3f}")
    latencies.sort()
    print(f"chart look-up over {len(latencies)} rounds (one batch of 4 searches): median "
          f"{statistics.median(latencies):.1f} ms, p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms, "
          f"max {latencies[-1]:.1f} ms")
    return 0


async def _read_charts(client, settings, dictations, rounds):  # type: ignore[no-untyped-def]
    from service.fhir.chart_reader import ChartReader

    reader = ChartReader(client, settings.vocabulary)
    charts = {d.name: await reader.vocabulary(d.patient, None) for d in dictations}
    latencies = []
    for i in range(rounds):
        started = time.perf_counter()
        await reader.vocabulary(dictations[i % len(dictations)].patient, None)
        latencies.append((time.perf_counter() - started) * 1000)
    await client.aclose()
    return charts, latencies


if __name__ == "__main__":
    sys.exit(main())
