"""The FHIR Subscription endpoint: authenticate (the channel header's shared secret, compared in constant time),
read what the notification asks for, record its jobs in the EHR, answer. Thin: the parsing is
service/subscriptions/notifications.py, the work service/subscriptions/dispatcher.py. FHIR-facing: errors are
OperationOutcomes."""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from service.api.deps import get_settings, get_subscriptions
from service.auth.errors import InvalidToken
from service.config import Settings
from service.errors import ScribeError
from service.logs import event
from service.subscriptions.dispatcher import Dispatcher
from service.subscriptions.notifications import parse

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"


class NotifyOff(ScribeError):
    status, slug, title = 404, "notify-off", "Subscription endpoint not configured"


def router(path: str) -> APIRouter:
    routes = APIRouter(tags=["FHIR Subscriptions"])
    description = ("R4 rest-hook (empty POST; with payload, PUT {path}/{Type}/{id}) and Subscriptions Backport IG "
                   "notification Bundles. Needs the Subscription's channel.header secret.")
    routes.add_api_route(path, notified, methods=["POST"], summary="Subscription notification",
                         description=description)
    routes.add_api_route(path + "/{resource_type}/{resource_id}", notified, methods=["PUT", "POST"],
                         summary="Subscription notification with the resource (rest-hook payload)")
    return routes


async def notified(request: Request, resource_type: str | None = None, resource_id: str | None = None,
                   dispatcher: Dispatcher | None = Depends(get_subscriptions),
                   settings: Settings = Depends(get_settings)) -> JSONResponse:
    if dispatcher is None:
        raise NotifyOff("set subscriptions.secret to receive Subscription notifications")
    offered = request.headers.get(settings.subscriptions.secret_header, "")
    if not hmac.compare_digest(offered.encode(), settings.subscriptions.secret.get_secret_value().encode()):
        raise InvalidToken(f"missing or wrong {settings.subscriptions.secret_header}", error=None)
    body = bytearray()  # a full-resource payload can be megabytes: no copy per chunk (capped by BodyLimitMiddleware)
    async for chunk in request.stream():
        body += chunk
    # Off the event loop: json.loads of a multi-megabyte body takes a while. parse refuses a Bundle past the limits
    # (413) before any per-event work, and every malformed shape as a 400 OperationOutcome.
    work = await asyncio.to_thread(parse, body, resource_type, resource_id,
                                   max_entries=settings.subscriptions.max_entries,
                                   max_events=settings.subscriptions.max_events)
    # Each job is recorded in the EHR (a ready Task) before this answers 200: whatever happens to this replica
    # next, another takes it. The EHR unreachable meanwhile: 503, and it redelivers.
    accepted = await dispatcher.accept(work) if not work.empty else 0
    event(log, "subscription.notified", kind=work.kind, sources=len(work.resources) + len(work.references),
          query=work.query, accepted=accepted)
    outcome = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational",
        "diagnostics": f"accepted {accepted} job(s)" + (", a search queued" if work.query else "")
        if not work.empty else f"{work.kind}: nothing to do"}]}
    return JSONResponse(outcome, media_type=FHIR_JSON)
