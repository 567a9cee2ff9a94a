"""Async FHIR R4 client: the only code that talks to the organization's FHIR server.

Retries (after the server's Retry-After, else a jittered doubling backoff; service/fhir/retrying.py) only where
repeating cannot change the outcome: reads, searches and ``metadata``. Writes decide their own retries (see
writer.py), because a timed-out write may have happened.
Every failure becomes a ScribeError with the server's OperationOutcome diagnostics kept for the caller; logs get
the resource type, status and timing only.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from service import metrics
from service.config import FhirSettings
from service.errors import ScribeError
from service.fhir.retrying import passed_on, retry_after_s, retrying, server_asked
from service.logs import event, request_id

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = {429, 502, 503, 504}
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_RESOURCE_ID = re.compile(r"^(?=[A-Za-z0-9\-.]*[A-Za-z0-9\-])[A-Za-z0-9\-.]{1,64}$")  # a FHIR id, never . or ..
_LOCATION = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<vid>[^/]+))?/?$")


# The caller's own token, when it was issued for this FHIR server (SMART on-behalf-of). Set per request by the
# API layer; when empty, fhir-scribe's own identity (Backend Services, or a static sandbox token) is used.
on_behalf_of: contextvars.ContextVar[str | None] = contextvars.ContextVar("fhir_on_behalf_of", default=None)


class FhirUnavailable(ScribeError):
    status, slug, title = 503, "fhir-unavailable", "FHIR server unavailable"


class FhirTimeout(ScribeError):
    status, slug, title = 504, "fhir-timeout", "FHIR server timed out"


class FhirBadGateway(ScribeError):
    status, slug, title = 502, "fhir-error", "FHIR server error"


class FhirRefusedUser(ScribeError):
    """The EHR refused the user's own (forwarded) token: their session, not fhir-scribe, needs attention."""

    status, slug, title = 502, "fhir-refused-user", "The EHR refused the user's session"


class FhirConflict(ScribeError):
    """409 on a conditional create: a concurrent writer holds the same identifier (HAPI answers HAPI-2745). Worth a
    retry, which searches for the identifier first and finds that writer's note."""

    status, slug, title = 503, "fhir-conflict", "FHIR server busy with the same note"


class FhirRejected(ScribeError):
    """The server understood the request and refused it (validation, business rule, conflict)."""

    status, slug, title = 422, "fhir-rejected", "FHIR server rejected the request"


class BatchRefused(ScribeError):
    """The server does not process batch Bundles: ask the same things as separate requests."""

    status, slug, title = 502, "fhir-batch-refused", "FHIR server refused a batch"


@dataclass(frozen=True)
class Location:
    type: str
    id: str
    version: str | None


def parse_location(location: str) -> Location:
    """Absolute or relative, with or without _history: HAPI and others differ."""
    match = _LOCATION.search(location.split("?")[0])
    if not match:
        raise FhirBadGateway(f"the FHIR server returned an unreadable location '{location[:200]}'")
    return Location(match["type"], match["id"], match["vid"])


def outcome_issues(body: Any) -> list[str]:
    """OperationOutcome -> 'severity code: diagnostics' lines (the server's words, for the caller)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return []
    lines = []
    for issue in body.get("issue", [])[:20]:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        lines.append(f"{issue.get('severity', '?')} {issue.get('code', '?')}: {text}"[:500] + (f" @ {where}" if where else ""))
    return lines


class FhirClient:
    def __init__(self, settings: FhirSettings, http: httpx.AsyncClient | None = None,
                 service_token: Callable[[], Awaitable[str]] | None = None) -> None:
        """``service_token``: fhir-scribe's own token (Backend Services), used when no user token is forwarded."""
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=settings.timeout_s)
        self._service_token = service_token
        self._interactions: set[str] | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON, "Prefer": "return=representation"}
        token = on_behalf_of.get()
        if token is None and self._service_token is not None:
            token = await self._service_token()
        token = token or (self.settings.bearer_token.get_secret_value() if self.settings.bearer_token else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        rid = request_id.get()
        if rid:
            headers["X-Request-ID"] = rid
        return headers

    async def send(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                   retry: bool = False) -> httpx.Response:
        """One request. With ``retry`` (requests safe to repeat only) a timeout, an unreachable server or a
        429/502/503/504 is tried again, after the wait the server asked for if it did (service/fhir/retrying.py).
        Any other answer, error or not, is the caller's to read."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        merged = {**await self._headers(), **(headers or {})}
        if json is not None:
            merged["Content-Type"] = FHIR_JSON
        if not retry:
            return await self._attempt(method, url, path, json, merged, 1)
        async for attempt in retrying(self.settings, lambda _: True):  # _attempt raises only what is transient
            with attempt:
                return await self._attempt(method, url, path, json, merged, attempt.retry_state.attempt_number)
        raise AssertionError("unreachable")

    async def _attempt(self, method: str, url: str, path: str, json: Any, headers: dict[str, str],
                       attempt: int) -> httpx.Response:
        kind = path.split("/")[0].split("?")[0] or "root"
        interaction = _interaction(method, path, json)
        started = time.perf_counter()
        try:
            response = await self._http.request(method, url, json=json, headers=headers)
        except httpx.TimeoutException:
            metrics.FHIR_REQUESTS.labels(interaction, "timeout").inc()
            failure: ScribeError = FhirTimeout(f"no answer from the FHIR server within {self.settings.timeout_s:g} s")
        except httpx.TransportError as exc:
            metrics.FHIR_REQUESTS.labels(interaction, "unreachable").inc()
            failure = FhirUnavailable(f"cannot reach the FHIR server ({type(exc).__name__})")
        else:
            metrics.FHIR_REQUESTS.labels(interaction, f"{response.status_code // 100}xx").inc()
            event(log, "fhir.response", method=method, resource=kind, status=response.status_code,
                  attempt=attempt, ms=round((time.perf_counter() - started) * 1000, 1))
            if response.status_code not in RETRY_STATUSES:
                return response
            failure = self.error_for(response)
        event(log, "fhir.failure", level=logging.WARNING, method=method, resource=kind, attempt=attempt,
              problem=failure.slug, retry_after_s=server_asked(failure))
        raise failure

    def error_for(self, response: httpx.Response) -> ScribeError:
        issues = outcome_issues(_json(response))
        said = f": {'; '.join(issues)}" if issues else ""
        status = response.status_code
        if status in (503, 429):
            asked = retry_after_s(response.headers.get("Retry-After"))
            return FhirUnavailable(f"the FHIR server answered {status}{said}" +
                                   (f" and asked to retry after {asked:.0f} s" if asked is not None else ""),
                                   headers=passed_on(asked) if asked is not None else None)
        if status == 504:
            return FhirTimeout(f"the FHIR server answered 504{said}")
        if status == 409:
            error: ScribeError = FhirConflict(f"the FHIR server answered 409{said}")
        elif status in (400, 412, 422):
            error = FhirRejected(f"the FHIR server answered {status}{said}")
        elif status in (401, 403) and on_behalf_of.get() is not None:
            error = FhirRefusedUser(f"the EHR refused the user's access token ({status}): the user's session may have "
                                    f"ended or does not cover this; launch the app again from the EHR{said}")
        elif status in (401, 403):
            error = FhirBadGateway(f"the FHIR server refused fhir-scribe's credentials ({status}){said}")
        else:
            error = FhirBadGateway(f"the FHIR server answered {status}{said}")
        error.extras["fhir_issues"] = issues
        return error

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The resource, or None when the server says it does not exist (404/410) or the id cannot be one (an id
        becomes a URL path: "..", a slash or a query must never reach the server)."""
        if not (_RESOURCE_TYPE.match(resource_type) and _RESOURCE_ID.match(resource_id)):
            return None
        response = await self.send("GET", f"{resource_type}/{resource_id}", retry=True)
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise self.error_for(response)
        return _json(response)

    async def search(self, resource_type: str, params: dict[str, str], *, includes: bool = False,
                     fresh: bool = False) -> list[dict[str, Any]]:
        """The matches (and, with ``includes``, the resources _include'd with them). ``fresh``: the answer decides a
        write or a claim, so the server must not answer from a cache of earlier searches (HAPI JPA reuses cached
        results of the same search for 60 s by default, missing what was written since)."""
        headers = {"Cache-Control": "no-cache"} if fresh else None
        response = await self.send("GET", f"{resource_type}?{httpx.QueryParams(params)}", headers=headers,
                                   retry=True)
        if response.status_code != 200:
            raise self.error_for(response)
        return _resources(_json(response), resource_type, includes)

    async def batch_search(self, queries: dict[str, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
        """Several searches in one round trip (a batch Bundle of GETs): per resource type, its matches and their
        _include'd resources. One failed entry fails the whole: the caller wanted them together."""
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"{t}?{httpx.QueryParams(q)}"}} for t, q in queries.items()]}
        response = await self.send("POST", "", json=bundle, retry=True)  # reads only: safe to repeat
        if response.status_code in (400, 404, 405, 501):
            raise BatchRefused(f"the FHIR server does not take batches ({response.status_code})")
        if response.status_code != 200:
            raise self.error_for(response)
        entries = (_json(response) or {}).get("entry") or []
        if len(entries) != len(queries):
            raise FhirBadGateway(f"the FHIR server answered a batch of {len(queries)} with {len(entries)} entries")
        found = {}
        for resource_type, entry in zip(queries, entries):
            status = str((entry.get("response") or {}).get("status", ""))
            if not status.startswith("200"):
                raise FhirBadGateway(f"the FHIR server answered a batch search with {status or 'no status'}")
            found[resource_type] = _resources(entry.get("resource"), resource_type, includes=True)
        return found

    async def supports_interaction(self, code: str) -> bool:
        """Whether the CapabilityStatement lists this system interaction (transaction, batch); read once."""
        if self._interactions is None:
            response = await self.send("GET", "metadata", retry=True)
            if response.status_code != 200:
                raise self.error_for(response)
            rest = (_json(response) or {}).get("rest") or [{}]
            self._interactions = {i.get("code") for i in rest[0].get("interaction", [])}
        return code in self._interactions

    async def supports_transaction(self) -> bool:
        return await self.supports_interaction("transaction")


def _interaction(method: str, path: str, body: Any) -> str:
    """The FHIR RESTful interaction, a closed set of words for the metrics (never an id)."""
    if not path.strip("/"):
        kind = body.get("type") if isinstance(body, dict) else None
        return kind if kind in ("transaction", "batch") else "system"
    if path == "metadata":
        return "capabilities"
    if method == "GET":
        return "search" if "?" in path or "/" not in path else "read"
    return {"POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}.get(method, "other")


def _resources(bundle: Any, resource_type: str, includes: bool) -> list[dict[str, Any]]:
    entries = (bundle or {}).get("entry", []) if isinstance(bundle, dict) else []
    return [e["resource"] for e in entries if isinstance(e.get("resource"), dict)
            and (includes or e["resource"].get("resourceType") == resource_type)]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
