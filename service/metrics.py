"""Prometheus metrics: every family fhir-scribe exports, defined once here.

Labels carry only closed sets (a route template, a method, a status, an outcome word, a model name): never a
patient, a user, an identifier or a raw path, so scraping the endpoint reveals nothing about anyone's care.
``fhir_scribe_transcription_jobs_waiting`` is the one to scale on: audio waiting for a transcription worker.
Stages import this module (plain Python, no FastAPI); the API serves it at /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # no *_created series: half the scrape, and nothing a dashboard uses

PREFIX = "fhir_scribe_"
# Seconds: a health probe (ms) up to a long dictation transcribed on CPU (minutes).
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

TRANSCRIPTION_RUNNING = Gauge(PREFIX + "transcription_jobs_running", "Transcriptions being decoded by a worker now")
TRANSCRIPTION_WAITING = Gauge(PREFIX + "transcription_jobs_waiting",
                              "Transcriptions waiting for a free worker (scale out on this)")
REJECTED = Counter(PREFIX + "transcription_rejected", "Requests refused with 503 + Retry-After, by reason",
                   ["reason"])
AUDIO_SECONDS = Counter(PREFIX + "audio_seconds", "Seconds of audio transcribed")
TRANSCRIPTION_SECONDS = Histogram(PREFIX + "transcription_seconds", "Wall time of one transcription, by model",
                                  ["model"], buckets=_DURATIONS)
HTTP_DURATION = Histogram(PREFIX + "http_request_duration_seconds",
                          "HTTP requests by route template, method and status", ["route", "method", "status"],
                          buckets=_DURATIONS)
FHIR_REQUESTS = Counter(PREFIX + "fhir_requests", "Requests to the FHIR server, by interaction and outcome",
                        ["interaction", "outcome"])
NOTES_WRITTEN = Counter(PREFIX + "notes_written",
                        "Notes written to the FHIR server: created, existing (a retry), conflict, failed", ["outcome"])
SUBSCRIPTION_JOBS = Counter(PREFIX + "subscription_jobs", "Subscription-triggered jobs, by outcome", ["outcome"])
SUBSCRIPTION_QUEUE = Gauge(PREFIX + "subscription_queue_depth", "Notifications received, waiting for a worker")
VOCABULARY_LOOKUPS = Counter(PREFIX + "vocabulary_lookups", "Chart vocabulary look-ups, by outcome", ["outcome"])
VOCABULARY_SECONDS = Histogram(PREFIX + "vocabulary_lookup_seconds", "Wall time of one chart vocabulary look-up",
                               buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
REALTIME_STREAMS = Gauge(PREFIX + "realtime_streams", "Live transcription streams open (WebSocket /v1/realtime)")
IN_FLIGHT = Gauge(PREFIX + "http_requests_in_flight", "Requests being handled (health and metrics excluded)")
DRAINING = Gauge(PREFIX + "draining", "1 after SIGTERM while work in hand finishes, else 0")

# Every known label value starts at 0, so a rate() or an alert sees the series before the first event.
for _reason in ("transcription_slots", "upload_slots", "sections_queue", "subscription_queue", "draining",
                "realtime_streams"):
    REJECTED.labels(_reason)
for _outcome in ("created", "existing", "conflict", "failed"):
    NOTES_WRITTEN.labels(_outcome)
for _outcome in ("completed", "failed", "already_claimed", "handed_back", "released", "ehr_unavailable"):
    SUBSCRIPTION_JOBS.labels(_outcome)
for _outcome in ("applied", "timed-out", "failed"):
    VOCABULARY_LOOKUPS.labels(_outcome)


@contextmanager
def running_transcription(model: str, audio_s: float) -> Iterator[None]:
    """Around the engine call, on the worker thread (prometheus_client is thread-safe)."""
    TRANSCRIPTION_WAITING.dec()
    TRANSCRIPTION_RUNNING.inc()
    started = time.perf_counter()
    try:
        yield
        AUDIO_SECONDS.inc(audio_s)
    finally:
        TRANSCRIPTION_RUNNING.dec()
        TRANSCRIPTION_SECONDS.labels(model).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The text format and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
