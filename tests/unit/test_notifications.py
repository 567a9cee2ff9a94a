"""Reading Subscription notifications of every shape fhir-scribe is sent; where a recording's audio and context are."""

import base64
import json

import pytest

from service.errors import BadRequest
from service.subscriptions.audio_source import NotARecording, attachment, context_of
from service.subscriptions.notifications import parse


def bundle(kind: str, focus: str | None = None, full: dict | None = None) -> bytes:
    params = [{"name": "type", "valueCode": kind}]
    if focus:
        params.append({"name": "notification-event", "part": [{"name": "focus", "valueReference": {"reference": focus}}]})
    entries = [{"resource": {"resourceType": "Parameters", "parameter": params}}]
    if full:
        entries.append({"fullUrl": f"http://ehr/fhir/{full['resourceType']}/{full['id']}", "resource": full})
    return json.dumps({"resourceType": "Bundle", "type": "history", "entry": entries}).encode()


RECORDING = {"resourceType": "DocumentReference", "id": "r1", "subject": {"reference": "Patient/p"},
             "author": [{"reference": "Organization/o"}, {"reference": "Practitioner/d"}],
             "context": {"encounter": [{"reference": "Encounter/e"}]},
             "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}},
                         {"attachment": {"contentType": "audio/ogg", "data": base64.b64encode(b"x").decode()}}]}


def test_rest_hook_shapes():
    assert parse(b"").query and parse(b"  ").kind == "event"
    assert parse(b"", "DocumentReference", "r1").references == ["DocumentReference/r1"]
    assert parse(json.dumps(RECORDING).encode(), "DocumentReference", "r1").resources == [RECORDING]
    with pytest.raises(BadRequest, match="not DocumentReference/r2"):
        parse(json.dumps(RECORDING).encode(), "DocumentReference", "r2")


@pytest.mark.parametrize("kind", ["handshake", "heartbeat", "query-status"])
def test_backport_status_notifications_are_no_work(kind):
    work = parse(bundle(kind))
    assert work.empty and work.kind == kind


def test_backport_events_with_each_payload():
    assert parse(bundle("event-notification")).query  # empty payload
    assert parse(bundle("event-notification", "http://ehr/fhir/DocumentReference/r1/_history/2")).references == \
        ["DocumentReference/r1"]  # id-only
    assert parse(bundle("event-notification", "DocumentReference/r1", RECORDING)).resources == [RECORDING]


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not JSON"), (b"[1]", "not a FHIR resource"),
    (b'{"resourceType": "Patient"}', "not a notification"),
    (b'{"resourceType": "Bundle", "type": "history", "entry": []}', "must start with a Parameters"),
])
def test_what_is_not_a_notification_is_refused_precisely(body, message):
    with pytest.raises(BadRequest, match=message):
        parse(body)


def test_the_recordings_audio_and_context():
    assert attachment(RECORDING)["contentType"] == "audio/ogg"
    assert context_of(RECORDING) == ("p", "e", "Practitioner/d")
    media = {"resourceType": "Media", "subject": {"reference": "Patient/p"}, "operator": {"reference": "Practitioner/d"},
             "content": {"contentType": "audio/wav", "url": "Binary/b"}}
    assert attachment(media)["url"] == "Binary/b" and context_of(media) == ("p", None, "Practitioner/d")
    with pytest.raises(NotARecording, match="no Practitioner"):
        context_of({**RECORDING, "author": [{"reference": "Organization/o"}]})
    with pytest.raises(NotARecording, match="subscribe to the DocumentReference or Media"):
        context_of({"resourceType": "Binary", "contentType": "audio/ogg"})
