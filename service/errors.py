"""One exception family for every stage.

Stages raise these with an HTTP-ish status and a precise, PHI-free ``detail``; the API renders them as RFC 9457
problem+json (or a FHIR OperationOutcome on FHIR-facing endpoints) and the CLI prints them. Stages never import
FastAPI, so the same errors serve the CLI, the API and background workers.
"""

from __future__ import annotations

from service.metrics import REJECTED

PROBLEM_BASE = "urn:fhir-scribe:problem:"


class ScribeError(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        # Extension members of the problem document (RFC 9457 s3.2), e.g. the draft to retry with.
        self.extras: dict[str, object] = {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug


class BadRequest(ScribeError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unprocessable(ScribeError):
    status, slug, title = 422, "unprocessable", "Unprocessable request"


class Overloaded(ScribeError):
    """503 + Retry-After: a load balancer or client tries another replica or later. ``reason`` (a fixed word, e.g.
    "transcription_slots") labels the rejection in the metrics."""

    status, slug, title = 503, "overloaded", "Service busy"

    def __init__(self, detail: str, *, retry_after_s: int | float, reason: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, round(retry_after_s)))})
        self.reason = reason
        REJECTED.labels(reason).inc()
