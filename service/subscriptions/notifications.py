"""What a notification asks for, whatever its shape: R4 rest-hook (empty POST, or the resource PUT to
{endpoint}/{Type}/{id}) or a Subscriptions Backport IG Bundle (handshake, heartbeat, event-notification with
empty, id-only or full-resource payload). Pure: bytes in, work out.

The body comes from anyone holding the shared secret, so every element is type-checked before use (a wrong shape
is a 400 naming the element, never a 500), a Bundle with more entries or events than the limits is refused (413)
before any per-event work, and matching events to full entries is linear (one index, one look-up per event)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from service.config import SubscriptionSettings
from service.errors import BadRequest, ScribeError

AUDIO_SOURCES = ("DocumentReference", "Media", "Binary")
MAX_ENTRIES: int = SubscriptionSettings.model_fields["max_entries"].default
MAX_EVENTS: int = SubscriptionSettings.model_fields["max_events"].default
STATUS_KINDS = ("handshake", "heartbeat", "query-status", "query-event")


class NotificationTooLarge(ScribeError):
    status, slug, title = 413, "notification-too-large", "Notification too large"


@dataclass
class Work:
    resources: list[dict[str, Any]] = field(default_factory=list)  # sources delivered in full
    references: list[str] = field(default_factory=list)  # "Type/id" of sources to read
    query: bool = False  # "something changed": search for recordings
    kind: str = "event"  # event | handshake | heartbeat | query-status (counts for logs, no PHI)

    @property
    def empty(self) -> bool:
        return not (self.resources or self.references or self.query)


def parse(body: bytes | bytearray, resource_type: str | None = None, resource_id: str | None = None, *,
          max_entries: int = MAX_ENTRIES, max_events: int = MAX_EVENTS) -> Work:
    """The work a notification asks for. BadRequest (400) for what is not a notification fhir-scribe understands,
    NotificationTooLarge (413) past max_entries Bundle entries or max_events notification events."""
    try:
        return _parse(body, resource_type, resource_id, max_entries, max_events)
    except RecursionError:  # json's own guard (about 1000 levels, reached in microseconds), or anything after it
        raise BadRequest("the notification body is too deeply nested") from None


def _parse(body: bytes | bytearray, resource_type: str | None, resource_id: str | None, max_entries: int,
           max_events: int) -> Work:
    if not body.strip():
        if resource_type:
            return Work(references=[f"{resource_type}/{resource_id}"])
        return Work(query=True)
    try:
        resource = json.loads(body)
    except RecursionError:
        raise BadRequest("the notification body is too deeply nested") from None
    except ValueError:  # includes UnicodeDecodeError
        raise BadRequest("the notification body is not JSON") from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise BadRequest("the notification body is not a FHIR resource")
    if resource_type:
        if resource["resourceType"] != resource_type or (resource_id and resource.get("id") != resource_id):
            raise BadRequest(f"the body is not {resource_type}/{resource_id}")
        return Work(resources=[resource])
    if resource["resourceType"] == "Bundle" and resource.get("type") == "history":
        return _backport(resource, max_entries, max_events)
    if resource["resourceType"] in AUDIO_SOURCES:
        return Work(resources=[resource])
    raise BadRequest(f"a {_cut(resource['resourceType'])} is not a notification fhir-scribe understands")


def _backport(bundle: dict[str, Any], max_entries: int, max_events: int) -> Work:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be a list of entries")
    if len(entries) > max_entries:
        raise NotificationTooLarge(f"the notification Bundle has {len(entries)} entries; at most {max_entries} "
                                   "are accepted (subscriptions.max_entries)")
    for i, entry in enumerate(entries):  # at most max_entries: cheap
        _check_entry(entry, f"Bundle.entry[{i}]")
    status = entries[0].get("resource") if entries else None
    if status is None or status["resourceType"] != "Parameters":
        raise BadRequest("a Backport notification Bundle must start with a Parameters (subscription status)")
    params = status.get("parameter", [])
    if not isinstance(params, list):
        raise BadRequest("Bundle.entry[0].resource.parameter must be a list of parameters")
    events: list[tuple[int, dict[str, Any]]] = []
    kind: str | None = None
    for i, param in enumerate(params):  # bounded by the body size; O(1) per parameter
        where = f"Bundle.entry[0].resource.parameter[{i}]"
        if not isinstance(param, dict):
            raise BadRequest(f"{where} must be an object")
        name = param.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"{where}.name must be a string")
        if name == "notification-event":
            events.append((i, param))
            if len(events) > max_events:
                raise NotificationTooLarge(f"the notification has more than {max_events} notification events "
                                           "(subscriptions.max_events)")
        elif name == "type" and kind is None:
            code = param.get("valueCode")
            if not isinstance(code, str):
                raise BadRequest(f"{where}.valueCode must be a string (the notification type)")
            kind = code
    if kind in STATUS_KINDS:
        return Work(kind=kind)
    if kind is None:
        raise BadRequest("the subscription status Parameters has no type parameter")
    if kind != "event-notification":
        raise BadRequest(f"unknown Backport notification type {_cut(kind)!r}")
    full: dict[str, dict[str, Any]] = {}  # "Type/id" -> the resource delivered in full; first one wins
    for entry in entries[1:]:
        url, resource = entry.get("fullUrl"), entry.get("resource")
        if url and resource is not None:
            full.setdefault(_relative(url), resource)
    work = Work()
    for i, event in events:
        focus = _focus(event, f"Bundle.entry[0].resource.parameter[{i}]")
        if not focus:
            continue
        reference = _relative(focus)
        resource = full.get(reference)
        if resource is not None:
            work.resources.append(resource)
        else:
            work.references.append(reference)
    if not work.resources and not work.references:
        work.query = True  # payload "empty": the event says only that something happened
    return work


def _check_entry(entry: object, where: str) -> None:
    if not isinstance(entry, dict):
        raise BadRequest(f"{where} must be an object")
    if "fullUrl" in entry and not isinstance(entry["fullUrl"], str):
        raise BadRequest(f"{where}.fullUrl must be a string")
    if "resource" in entry:
        resource = entry["resource"]
        if not isinstance(resource, dict):
            raise BadRequest(f"{where}.resource must be an object (a FHIR resource)")
        if not isinstance(resource.get("resourceType"), str):
            raise BadRequest(f"{where}.resource.resourceType must be a string")
        if "id" in resource and not isinstance(resource["id"], str):
            raise BadRequest(f"{where}.resource.id must be a string")


def _focus(event: dict[str, Any], where: str) -> str | None:
    """The notification event's focus reference (None when it has none: an empty payload)."""
    parts = event.get("part", [])
    if not isinstance(parts, list):
        raise BadRequest(f"{where}.part must be a list of parts")
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadRequest(f"{where}.part[{j}] must be an object")
        if part.get("name") != "focus":
            continue
        value = part.get("valueReference")
        if not isinstance(value, dict):
            raise BadRequest(f"{where}.part[{j}].valueReference must be an object (the focus Reference)")
        reference = value.get("reference")
        if not isinstance(reference, str):
            raise BadRequest(f"{where}.part[{j}].valueReference.reference must be a string")
        return reference
    return None


def _cut(value: str) -> str:
    """A value from the body, cut short for an error message (a lone surrogate, valid in JSON, cannot be sent
    back as UTF-8: replaced)."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value if len(value) <= 64 else value[:64] + "..."


def _relative(reference: str) -> str:
    """'http://ehr/fhir/DocumentReference/1/_history/2' -> 'DocumentReference/1'."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])
