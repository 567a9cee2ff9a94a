"""When to repeat a FHIR request and how long to wait first: the server's own word (Retry-After on a 429 or 503)
before our backoff. A busy EHR that asks for two seconds gets two seconds, not a burst of retries that keeps it
busy; one that asks for longer than ``fhir.retry_after_max_s`` is not waited on at all: the caller gets the error
at once, with the server's Retry-After passed on (and, for a dictation, its draft), and decides when to come back.

The policy is tenacity's (stop, wait, retry predicates); what is FHIR's is which failures are worth repeating,
decided by the caller: the client repeats only what is safe to repeat (see client.py), the writer searches for
its note before each repeat (see writer.py).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from service.config import FhirSettings
from service.errors import ScribeError


def retry_after_s(value: str | None) -> float | None:
    """RFC 9110 s10.2.3: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def server_asked(failure: BaseException | None) -> float | None:
    """The wait the FHIR server asked for in the response that made ``failure`` (see FhirClient.error_for)."""
    headers = getattr(failure, "headers", None) or {}
    return retry_after_s(headers.get("Retry-After"))


def passed_on(seconds: float) -> dict[str, str]:
    """The server's Retry-After, for our own caller (whole seconds, at least one)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def retrying(settings: FhirSettings, worth_repeating: Callable[[BaseException], bool]) -> AsyncRetrying:
    """Up to ``1 + settings.retries`` attempts of a block; re-raises the last failure."""

    def asked_too_long(state: RetryCallState) -> bool:
        asked = server_asked(state.outcome.exception() if state.outcome else None)
        return asked is not None and asked > settings.retry_after_max_s

    def wait(state: RetryCallState) -> float:
        asked = server_asked(state.outcome.exception() if state.outcome else None)
        if asked is not None:
            return asked
        return settings.backoff_s * (2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.5)

    return AsyncRetrying(stop=stop_after_attempt(1 + settings.retries) | asked_too_long, wait=wait,
                         retry=retry_if_exception(lambda e: isinstance(e, ScribeError) and worth_repeating(e)),
                         reraise=True)
