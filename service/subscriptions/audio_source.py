"""Where a recording's audio and context are in the EHR's resources: a DocumentReference or Media with an audio
attachment (inline data, or a url to a Binary), or a Binary. A source that is not a recording says why."""

from __future__ import annotations

import base64
import binascii
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
