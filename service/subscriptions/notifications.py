"""What a notification asks for, whatever its shape: R4 rest-hook (empty POST, or the resource PUT to
{endpoint}/{Type}/{id}) or a Subscriptions Backport IG Bundle (handshake, heartbeat, event-notification with
empty, id-only or full-resource payload). Pure: bytes in, work out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from service.errors import BadRequest

AUDIO_SOURCES = ("DocumentReference", "Media", "Binary")


@dataclass
class Work:
    resources: list[dict[str, Any]] = field(default_factory=list)  # sources delivered in full
    references: list[str] = field(default_factory=list)  # "Type/id" of sources to read
    query: bool = False  # "something changed": search for recordings
    kind: str = "event"  # event | handshake | heartbeat | query-status (counts for logs, no PHI)

    @property
    def empty(self) -> bool:
        return not (self.resources or self.references or self.query)


def parse(body: bytes, resource_type: str | None = None, resource_id: str | None = None) -> Work:
    if not body.strip():
        if resource_type:
            return Work(references=[f"{resource_type}/{resource_id}"])
        return Work(query=True)
    try:
        resource = json.loads(body)
    except ValueError:
        raise BadRequest("the notification body is not JSON") from None
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise BadRequest("the notification body is not a FHIR resource")
    if resource_type:
        if resource.get("resourceType") != resource_type or (resource_id and resource.get("id") != resource_id):
            raise BadRequest(f"the body is not {resource_type}/{resource_id}")
        return Work(resources=[resource])
    if resource["resourceType"] == "Bundle" and resource.get("type") == "history":
        return _backport(resource)
    if resource["resourceType"] in AUDIO_SOURCES:
        return Work(resources=[resource])
    raise BadRequest(f"a {resource['resourceType']} is not a notification fhir-scribe understands")


def _backport(bundle: dict[str, Any]) -> Work:
    entries = bundle.get("entry") or []
    status = (entries[0].get("resource") if entries else None) or {}
    if status.get("resourceType") != "Parameters":
        raise BadRequest("a Backport notification Bundle must start with a Parameters (subscription status)")
    params = status.get("parameter") or []
    kind = next((p.get("valueCode") for p in params if p.get("name") == "type"), None)
    if kind in ("handshake", "heartbeat", "query-status", "query-event"):
        return Work(kind=kind)
    if kind != "event-notification":
        raise BadRequest(f"unknown Backport notification type {kind!r}")
    full = {e.get("fullUrl"): e["resource"] for e in entries[1:] if isinstance(e.get("resource"), dict)}
    work = Work()
    for event in (p for p in params if p.get("name") == "notification-event"):
        focus = next((part.get("valueReference", {}).get("reference") for part in event.get("part", [])
                      if part.get("name") == "focus"), None)
        if not focus:
            continue
        resource = next((r for url, r in full.items() if url and _same(url, focus)), None)
        if resource is not None:
            work.resources.append(resource)
        else:
            work.references.append(_relative(focus))
    if not work.resources and not work.references:
        work.query = True  # payload "empty": the event says only that something happened
    return work


def _relative(reference: str) -> str:
    """'http://ehr/fhir/DocumentReference/1/_history/2' -> 'DocumentReference/1'."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def _same(full_url: str, focus: str) -> bool:
    return _relative(full_url) == _relative(focus)
