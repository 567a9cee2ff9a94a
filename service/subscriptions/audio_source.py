"""Where a recording's audio and context are in the EHR's resources: a DocumentReference or Media with an audio
attachment (inline data, or a url to a Binary), or a Binary. A source that is not a recording says why."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone
from typing import Any

from service.errors import Unprocessable
from service.fhir.client import FhirClient


class NotARecording(Unprocessable):
    slug, title = "not-a-recording", "Not a recording"


def attachment(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The first audio attachment of a DocumentReference, Media or Binary, or None."""
    kind = resource.get("resourceType")
    if kind == "DocumentReference":
        found = [c.get("attachment") or {} for c in resource.get("content", [])]
    elif kind == "Media":
        found = [resource.get("content") or {}]
    elif kind == "Binary":
        found = [resource]
    else:
        return None
    return next((a for a in found if str(a.get("contentType", "")).startswith("audio/")), None)


async def fetch_audio(client: FhirClient, resource: dict[str, Any], max_bytes: int) -> bytes:
    found = attachment(resource)
    if found is None:
        raise NotARecording(f"{resource.get('resourceType')} has no audio/* content")
    if "data" not in found and found.get("url"):
        url = str(found["url"])
        base = client.base_url + "/"
        if url.startswith(base):
            url = url[len(base):]
        if not url.startswith("Binary/") or url.count("/") != 1:
            raise NotARecording("the audio url is not a Binary on this FHIR server")
        binary = await client.read("Binary", url.split("/", 1)[1])
        if binary is None:
            raise NotARecording(f"{url} does not exist")
        found = {**binary, "contentType": found.get("contentType")}
    if not found.get("data"):
        raise NotARecording("the audio attachment has neither data nor a url")
    if len(found["data"]) * 3 // 4 > max_bytes:
        raise NotARecording(f"the recording is larger than audio.max_upload_bytes ({max_bytes})")
    try:
        return base64.b64decode(found["data"], validate=True)
    except (binascii.Error, ValueError):
        raise NotARecording("the audio data is not valid base64") from None


def context_of(resource: dict[str, Any]) -> tuple[str, str | None, str]:
    """(patient id, encounter id, author reference) of a recording; a job fails with the reason when missing."""
    kind = resource.get("resourceType")
    if kind == "DocumentReference":
        subject = (resource.get("subject") or {}).get("reference", "")
        encounters = (resource.get("context") or {}).get("encounter") or [{}]
        encounter = encounters[0].get("reference", "")
        authors = [a.get("reference", "") for a in resource.get("author", [])]
    elif kind == "Media":
        subject = (resource.get("subject") or {}).get("reference", "")
        encounter = (resource.get("encounter") or {}).get("reference", "")
        authors = [(resource.get("operator") or {}).get("reference", "")]
    else:
        raise NotARecording(f"a {kind} has no patient or author: subscribe to the DocumentReference or Media "
                            f"that holds the recording")
    if not subject.startswith("Patient/"):
        raise NotARecording(f"the {kind} has no Patient subject")
    author = next((a for a in authors if a.startswith(("Practitioner/", "PractitionerRole/"))), None)
    if author is None:
        raise NotARecording(f"the {kind} names no Practitioner or PractitionerRole author, who signs the note")
    return subject.split("/", 1)[1], (encounter.split("/", 1)[1] if encounter.startswith("Encounter/") else None), \
        author


def recording_end(resource: dict[str, Any], duration_s: float) -> datetime | None:
    """When the recording ended, from the resource's own times: Media.createdPeriod.end, else a start
    (Media.createdPeriod.start or createdDateTime, the attachment's creation) plus the audio's length, else the
    DocumentReference's date (made once the recording was). None when it names no usable time: the note then
    takes the time it is processed, as a live dictation does. A time that cannot be a recording's (in the future,
    no time zone, before 2000) is not used."""
    found = attachment(resource) or {}
    period = resource.get("createdPeriod") or {}
    for value, is_start in ((period.get("end"), False), (period.get("start"), True),
                            (resource.get("createdDateTime"), True), (found.get("creation"), True),
                            (resource.get("date") if resource.get("resourceType") == "DocumentReference" else None,
                             False)):
        instant = _instant(value)
        if instant is not None:
            end = instant + timedelta(seconds=duration_s) if is_start else instant
            return end if end <= datetime.now(timezone.utc) + timedelta(minutes=5) else None
    return None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None  # a date without a time is not precise enough for a note's period
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if instant.tzinfo is None or instant.year < 2000:
        return None
    return instant.astimezone(timezone.utc)
