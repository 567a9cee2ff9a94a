"""Reading Subscription notifications of every shape fhir-scribe is sent; where a recording's audio and context are."""

import base64
import json
import re

import pytest

from service.errors import BadRequest
from service.subscriptions import notifications
from service.subscriptions.audio_source import NotARecording, attachment, context_of
from service.subscriptions.notifications import NotificationTooLarge, parse


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


def backport(params: list, entries: list | None = None, status: object = None) -> bytes:
    """A Backport event-notification Bundle built from its parts (each may be malformed on purpose)."""
    first = {"resource": {"resourceType": "Parameters", "parameter": params}} if status is None else status
    return json.dumps({"resourceType": "Bundle", "type": "history", "entry": [first, *(entries or [])]}).encode()


TYPE = {"name": "type", "valueCode": "event-notification"}


def event(*parts) -> dict:
    return {"name": "notification-event", "part": list(parts)}


def focus(reference: object) -> dict:
    return {"name": "focus", "valueReference": {"reference": reference}}


P = "Bundle.entry[0].resource.parameter"


@pytest.mark.parametrize("body, message", [
    (b'{"resourceType": "Bundle", "type": "history", "entry": [1]}', "Bundle.entry[0] must be an object"),
    (b'{"resourceType": "Bundle", "type": "history", "entry": {"resource": {}}}', "Bundle.entry must be a list"),
    (b'{"resourceType": "Bundle", "type": "history", "entry": "x"}', "Bundle.entry must be a list"),
    (backport([TYPE], [1]), "Bundle.entry[1] must be an object"),
    (backport([TYPE], status={"resource": "Parameters"}), "Bundle.entry[0].resource must be an object"),
    (backport([TYPE], [{"fullUrl": "DocumentReference/1", "resource": "a string"}]),
     "Bundle.entry[1].resource must be an object"),
    (backport([TYPE], [{"fullUrl": "DocumentReference/1", "resource": {"id": "1"}}]),
     "Bundle.entry[1].resource.resourceType must be a string"),
    (backport([TYPE], [{"fullUrl": "DocumentReference/1", "resource": {"resourceType": "DocumentReference",
                                                                       "id": 1}}]),
     "Bundle.entry[1].resource.id must be a string"),
    (backport([TYPE], [{"fullUrl": 7, "resource": RECORDING}]), "Bundle.entry[1].fullUrl must be a string"),
    (backport("x"), "Bundle.entry[0].resource.parameter must be a list"),
    (backport({"name": "type"}), "Bundle.entry[0].resource.parameter must be a list"),
    (backport([1]), f"{P}[0] must be an object"),
    (backport([{"valueCode": "heartbeat"}]), f"{P}[0].name must be a string"),
    (backport([{"name": "type", "valueCode": 5}]), f"{P}[0].valueCode must be a string"),
    (backport([{"name": "type", "valueCode": ["handshake"]}]), f"{P}[0].valueCode must be a string"),
    (backport([{"name": "status", "valueCode": "active"}]), "has no type parameter"),
    (backport([{"name": "type", "valueCode": "x" * 10_000}]),
     "unknown Backport notification type '" + "x" * 64 + "...'"),  # an echoed value is cut short
    (backport([TYPE, {"name": "notification-event", "part": "x"}]), f"{P}[1].part must be a list"),
    (backport([TYPE, event(1)]), f"{P}[1].part[0] must be an object"),
    (backport([TYPE, event({"name": "event-number", "valueString": "1"}, 2)]), f"{P}[1].part[1] must be"),
    (backport([TYPE, event({"name": "focus", "valueReference": 42})]),
     f"{P}[1].part[0].valueReference must be an object"),
    (backport([TYPE, event({"name": "focus", "valueReference": "DocumentReference/1"})]),
     f"{P}[1].part[0].valueReference must be an object"),
    (backport([TYPE, event({"name": "focus"})]), f"{P}[1].part[0].valueReference must be an object"),
    (backport([TYPE, event(focus(12))]), f"{P}[1].part[0].valueReference.reference must be a string"),
    (backport([TYPE, event(focus({"reference": "DocumentReference/1"}))]),
     f"{P}[1].part[0].valueReference.reference must be a string"),
    (b'{"resourceType": 12}', "not a FHIR resource"),
    (b"\xff\xfe{", "not JSON"),
    (b"[" * 100_000, "too deeply nested"),
    (b'{"a":' * 100_000, "too deeply nested"),
    (b'{"resourceType": "Bundle", "type": "history", "entry": ' + b"[" * 100_000, "too deeply nested"),
], ids=lambda v: v if isinstance(v, str) else "body")
def test_every_malformed_shape_is_a_precise_400(body, message):
    with pytest.raises(BadRequest, match=re.escape(message)) as refused:
        parse(body)
    assert refused.value.status == 400


def test_a_recursion_error_after_json_is_still_a_400(monkeypatch):
    def too_deep(*_):
        raise RecursionError
    monkeypatch.setattr(notifications, "_backport", too_deep)
    with pytest.raises(BadRequest, match="too deeply nested"):
        parse(backport([TYPE]))


def many(entries: int, events: int) -> bytes:
    """A Bundle with `entries` entries (the status and entries-1 full DocumentReferences) and `events` events."""
    params = [TYPE] + [event({"name": "event-number", "valueString": str(i)},
                             focus(f"DocumentReference/d{i}/_history/1")) for i in range(events)]
    full = [{"fullUrl": f"http://ehr/fhir/DocumentReference/d{i}", "resource": {"resourceType": "DocumentReference",
                                                                                 "id": f"d{i}"}}
            for i in range(entries - 1)]
    return backport(params, full)


def no_per_event_work(monkeypatch):
    def forbidden(_):
        raise AssertionError("per-event work done on a notification that is too large")
    monkeypatch.setattr(notifications, "_relative", forbidden)
    monkeypatch.setattr(notifications, "_focus", forbidden)


@pytest.mark.parametrize("entries, events, message", [
    (101, 1, "101 entries; at most 100 are accepted"),
    (2, 101, "more than 100 notification events"),
    (10_000, 10_000, "10000 entries; at most 100 are accepted"),
    (100, 10_000, "more than 100 notification events"),
])
def test_past_the_caps_is_refused_413_before_any_per_event_work(monkeypatch, entries, events, message):
    body = many(entries, events)
    no_per_event_work(monkeypatch)
    with pytest.raises(NotificationTooLarge, match=message) as refused:
        parse(body)
    assert refused.value.status == 413 and refused.value.slug == "notification-too-large"


def test_the_caps_are_parameters():
    with pytest.raises(NotificationTooLarge, match="at most 5 are accepted"):
        parse(many(6, 1), max_entries=5)
    with pytest.raises(NotificationTooLarge, match="more than 3 notification events"):
        parse(many(2, 4), max_events=3)
    assert len(parse(many(1000, 1000), max_entries=1000, max_events=1000).resources) == 999


def test_a_bundle_at_the_caps_matches_each_focus_to_its_full_entry_in_linear_time(monkeypatch):
    """100 entries (the status and 99 full resources), 100 events in another order: 99 match a full entry, one is
    id-only. Each reference is made relative once: the full entries are indexed, each event is one look-up."""
    order = list(range(99))[::-1] + [500]  # the last focus has no full entry
    params = [TYPE] + [event(focus(f"DocumentReference/d{i}/_history/3")) for i in order]
    full = [{"fullUrl": f"http://ehr/fhir/DocumentReference/d{i}", "resource": {"resourceType": "DocumentReference",
                                                                                 "id": f"d{i}"}} for i in range(99)]
    body = backport(params, full)
    calls = []
    relative = notifications._relative
    monkeypatch.setattr(notifications, "_relative", lambda r: calls.append(r) or relative(r))
    work = parse(body)
    assert [r["id"] for r in work.resources] == [f"d{i}" for i in range(99)][::-1]
    assert work.references == ["DocumentReference/d500"] and not work.query and work.kind == "event"
    assert len(calls) == 99 + 100


def test_the_first_full_entry_for_a_reference_is_used():
    first = {"resourceType": "DocumentReference", "id": "d1", "status": "current"}
    full = [{"fullUrl": "http://ehr/fhir/DocumentReference/d1/_history/1", "resource": first},
            {"fullUrl": "DocumentReference/d1", "resource": {**first, "status": "superseded"}},
            {"fullUrl": "http://ehr/fhir/DocumentReference/d2"}]  # id-only entry: no resource
    work = parse(backport([TYPE, event(focus("DocumentReference/d1")), event(focus("DocumentReference/d2")),
                           event({"name": "event-number", "valueString": "3"})], full))
    assert work.resources == [first] and work.references == ["DocumentReference/d2"]


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
