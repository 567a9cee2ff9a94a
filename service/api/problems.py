"""Every error leaves the API as RFC 9457 application/problem+json, with the request id to quote to support.

Validation errors list the fields and what is wrong with them, never the submitted values (which may be PHI).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from fastapi.encoders import jsonable_encoder
from starlette.responses import HTMLResponse, JSONResponse, Response

from service.api.deps import get_refusals
from service.auth.errors import Forbidden
from service.config import Settings
from service.errors import PROBLEM_BASE, ScribeError
from service.logs import event, request_id
from service.web import error_page

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def _text(detail: str) -> str:
    """Details may quote the caller's input; half a UTF-16 pair (valid JSON) cannot be encoded: replaced."""
    return detail.encode("utf-8", "replace").decode("utf-8")


def problem(status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: object) -> JSONResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": _text(detail),
            "request_id": request_id.get(), **jsonable_encoder(extra)}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def operation_outcome(status: int, slug: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The same error for a FHIR client (the Subscription endpoint): an OperationOutcome."""
    code = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 413: "too-long",
            503: "transient"}.get(status, "exception")
    body = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": code, "diagnostics": _text(detail),
        "details": {"coding": [{"system": PROBLEM_BASE.rstrip(":"), "code": slug}],
                    "text": f"request id {request_id.get()}"}}]}
    return JSONResponse(body, status_code=status, media_type="application/fhir+json", headers=headers)


def error_response(path: str, fhir_path: str, status: int, slug: str, title: str, detail: str,
                   headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    """The error in the caller's language: an OperationOutcome under the FHIR-facing path (the Subscription
    endpoint: the caller is a FHIR server), a problem document everywhere else."""
    if path.startswith(fhir_path):
        return operation_outcome(status, slug, detail, headers)
    return problem(status, slug, title, detail, headers, **extra)


# Where a clinician's browser lands by navigation (the EHR's redirects, the app's page): a failure there is a
# page for a person when the browser asks for HTML, and problem+json for everyone else.
_BROWSER_PATHS = ("/smart/launch", "/smart/callback", "/app/")
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/problem+json" not in accept


def install_problem_handlers(app: FastAPI, settings: Settings) -> None:
    fhir_facing = settings.subscriptions.path

    def respond(request: Request, status: int, slug: str, title: str, detail: str,
                headers: dict[str, str] | None = None, **extra: object) -> Response:
        if request.url.path.startswith(_BROWSER_PATHS) and _wants_html(request):
            page = error_page.render(title, _text(detail), slug, request_id.get(),
                                     settings.smart_app.public_url)
            return HTMLResponse(page, status_code=status, headers={**(headers or {}), **_PAGE_HEADERS})
        return error_response(request.url.path, fhir_facing, status, slug, title, detail, headers, **extra)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        principal = getattr(request.state, "principal", None)
        auditor = get_refusals(request)
        if principal is not None and auditor is not None:
            auditor.record(user=principal.fhir_user, client_id=principal.client_id, patient=principal.patient,
                           request_id=request_id.get() or "")
        event(log, "request.problem", status=exc.status, problem=exc.slug)
        return respond(request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extras)

    @app.exception_handler(ScribeError)
    async def _scribe(request: Request, exc: ScribeError) -> Response:
        event(log, "request.problem", status=exc.status, problem=exc.slug)
        return respond(request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extras)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return respond(request, 422, "invalid-request", "Invalid request", detail, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return respond(request, exc.status_code, f"http-{exc.status_code}", title, str(exc.detail), exc.headers)

    # Unexpected exceptions are answered by RequestContextMiddleware, inside the request's context (request id).
