"""Subscription-triggered dictation (issue 9) against the real FHIR servers: the EHR stores a recording, its
Subscription notifies fhir-scribe, and the note, its AuditEvent and a completed Task appear in the EHR; with
redelivered notifications and two service instances, exactly one note; wrong secrets, handshakes and heartbeats
do no work; a non-recording fails its Task; a service killed mid-job is taken over after the lease."""

import base64
import concurrent.futures
import os
import re
import signal
import uuid

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.waiting import holds, wait_for

SECRET = "test-subscription-secret-" + uuid.uuid4().hex
HEADER = {"X-Scribe-Secret": SECRET, "Content-Type": "application/fhir+json"}
RECORDING_TYPE = {"coding": [{"system": "urn:test:fhir-scribe", "code": "dictation-recording"}]}
JOBS = "urn:fhir-scribe:job"


def _service(tmp_path_factory, fhir_server, name, **env):
    return start_server(tmp_path_factory.mktemp(name) / "server.log", **TEST_LIMITS,
                        SCRIBE_FHIR__BASE_URL=fhir_server.base, SCRIBE_SUBSCRIPTIONS__SECRET=SECRET,
                        SCRIBE_SUBSCRIPTIONS__QUERY="DocumentReference?type=urn:test:fhir-scribe|dictation-recording"
                                                    "&_sort=-_lastUpdated&_count=50",  # the newest, as the default
                        **env)


@pytest.fixture(scope="module")
def services(tmp_path_factory, fhir_server):
    """Two replicas of the service on one EHR."""
    running = [_service(tmp_path_factory, fhir_server, f"replica{i}") for i in range(2)]
    yield running
    for service in running:
        stop_server(service)


def create(fhir_server, resource: dict) -> dict:
    response = httpx.post(f"{fhir_server.base}/{resource['resourceType']}", json=resource,
                          headers={"Content-Type": "application/fhir+json", "Prefer": "return=representation"},
                          timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def recording(fhir_server, audio: bytes, via_binary: bool = False, content_type: str = "audio/ogg") -> dict:
    attachment = {"contentType": content_type}
    if via_binary:
        binary = create(fhir_server, {"resourceType": "Binary", "contentType": content_type,
                                      "data": base64.b64encode(audio).decode()})
        attachment["url"] = f"Binary/{binary['id']}"
    else:
        attachment["data"] = base64.b64encode(audio).decode()
    return create(fhir_server, {
        "resourceType": "DocumentReference", "status": "current", "type": RECORDING_TYPE,
        "subject": {"reference": f"Patient/{DEMO_PATIENT}"},
        "author": [{"reference": f"Practitioner/{DEMO_PRACTITIONER}"}],
        "context": {"encounter": [{"reference": f"Encounter/{DEMO_ENCOUNTER}"}]},
        "content": [{"attachment": attachment}]})


def task_of(fhir_server, source: dict) -> list[dict]:
    return fhir_server.search("Task", identifier=f"{JOBS}|DocumentReference/{source['id']}/_history/"
                                                 f"{source['meta']['versionId']}")


def wait_for_task(fhir_server, source: dict, status: str, timeout_s: float = 120) -> dict:
    def found() -> dict | None:
        tasks = task_of(fhir_server, source)
        assert tasks and tasks[0]["status"] == status, tasks  # (the last one seen is in the timeout's message)
        return tasks[0]

    return wait_for(found, timeout=timeout_s, interval=0.5,
                    what=f"a {status} Task for DocumentReference/{source['id']}")


def notes_from(fhir_server, source: dict) -> list[dict]:
    return [d for d in fhir_server.search("DocumentReference", subject=f"Patient/{DEMO_PATIENT}", _count="500")
            if any(r.get("target", {}).get("reference") == f"DocumentReference/{source['id']}"
                   for r in d.get("relatesTo", []))]


def assert_one_note(fhir_server, source: dict) -> dict:
    task = wait_for_task(fhir_server, source, "completed")
    notes = notes_from(fhir_server, source)
    assert len(notes) == 1, [n["id"] for n in notes]
    note = notes[0]
    assert task["output"][0]["valueReference"]["reference"] == f"DocumentReference/{note['id']}"
    assert note["docStatus"] == "preliminary" and note["relatesTo"][0]["code"] == "transforms"
    assert note["author"] == [{"reference": f"Practitioner/{DEMO_PRACTITIONER}"}]
    assert "chest pain" in base64.b64decode(note["content"][0]["attachment"]["data"]).decode().lower()
    assert len(fhir_server.search("AuditEvent", entity=f"DocumentReference/{note['id']}")) == 1
    # Nobody reviewed it: the review flags go with the Task, each with where to listen.
    checks = [n["text"] for n in task.get("note", [])]
    assert checks and all(re.match(r"Check '.+' \(at \d+:\d\d\.\d-\d+:\d\d\.\d of the recording\): ", check)
                          for check in checks), checks
    return note


def subscribe(fhir_server, endpoint: str, payload: bool) -> dict:
    channel = {"type": "rest-hook", "endpoint": endpoint, "header": [f"X-Scribe-Secret: {SECRET}"]}
    if payload:
        channel["payload"] = "application/fhir+json"
    return create(fhir_server, {"resourceType": "Subscription", "status": "requested",
                                "reason": "fhir-scribe test", "channel": channel,
                                "criteria": "DocumentReference?type=urn:test:fhir-scribe|dictation-recording"})


@pytest.mark.parametrize("payload", [True, False], ids=["rest-hook-payload", "rest-hook-empty"])
def test_a_subscription_notification_becomes_a_note(services, fhir_server, dictation, payload):
    subscription = subscribe(fhir_server, services[0].url + "/fhir/notify", payload)
    try:
        source = recording(fhir_server, dictation.audio, via_binary=not payload)
        assert_one_note(fhir_server, source)
    finally:
        httpx.delete(f"{fhir_server.base}/Subscription/{subscription['id']}", timeout=30)


TOPIC_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


# sekmet-fhir only: HAPI 8.8.0 accepted this topic and activated the Subscription but delivered nothing within two
# minutes (README, Known limits). Backport notification Bundles themselves are tested on both below.
@pytest.mark.parametrize("fhir_server", ["sekmet"], indirect=True)
def test_a_backport_topic_subscription_becomes_a_note(services, fhir_server, dictation):
    """Subscriptions Backport IG: an R4 SubscriptionTopic (as Basic) for new recordings, a topic Subscription with
    id-only payload; the EHR's handshake is answered, its event notification becomes the note."""
    name = f"scribe-recording-{uuid.uuid4().hex[:8]}"
    url = f"http://example.org/fhir/SubscriptionTopic/{name}"
    create(fhir_server, {
        "resourceType": "Basic", "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types",
                                                      "code": "SubscriptionTopic"}]},
        "modifierExtension": [{"url": f"{TOPIC_EXT}.status", "valueCode": "active"}],
        "extension": [
            {"url": f"{TOPIC_EXT}.url", "valueUri": url}, {"url": f"{TOPIC_EXT}.name", "valueString": name},
            {"url": f"{TOPIC_EXT}.title", "valueString": "New dictation recording"},
            {"url": f"{TOPIC_EXT}.resourceTrigger", "extension": [
                {"url": "description", "valueMarkdown": "A recording is stored"},
                {"url": "resource", "valueUri": "http://hl7.org/fhir/StructureDefinition/DocumentReference"},
                {"url": "supportedInteraction", "valueCode": "create"},
                {"url": "queryCriteria", "extension": [
                    {"url": "current", "valueString": "DocumentReference?type=urn:test:fhir-scribe|dictation-recording"},
                    {"url": "resultForCreate", "valueCode": "test-passes"},
                    {"url": "requireBoth", "valueBoolean": False}]}]},
            {"url": f"{TOPIC_EXT}.canFilterBy", "extension": [
                {"url": "description", "valueMarkdown": "Filter on the document type"},
                {"url": "resource", "valueUri": "DocumentReference"}, {"url": "filterParameter", "valueString": "type"}]}]})
    subscription = create(fhir_server, {
        "resourceType": "Subscription", "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested", "reason": "fhir-scribe test (backport)", "criteria": url,
        "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                     "valueString": "DocumentReference?type=urn:test:fhir-scribe|dictation-recording"}]},
        "channel": {"type": "rest-hook", "endpoint": services[1].url + "/fhir/notify",
                    "payload": "application/fhir+json", "header": [f"X-Scribe-Secret: {SECRET}"],
                    "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                "valueCode": "id-only"}]}}})
    try:
        wait_for(lambda: fhir_server.search("Subscription", _id=subscription["id"])[0]["status"] == "active",
                 timeout=60, interval=0.5, what="the subscription to become active (handshake refused?)")
        source = recording(fhir_server, dictation.audio)
        assert_one_note(fhir_server, source)
    finally:
        httpx.delete(f"{fhir_server.base}/Subscription/{subscription['id']}", timeout=30)


def backport(kind: str, focus: str | None = None) -> dict:
    params = [{"name": "subscription", "valueReference": {"reference": "Subscription/test"}},
              {"name": "topic", "valueCanonical": "http://example.org/topic/recording"},
              {"name": "status", "valueCode": "active"}, {"name": "type", "valueCode": kind}]
    if focus:
        params.append({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": "1"}, {"name": "focus", "valueReference": {"reference": focus}}]})
    return {"resourceType": "Bundle", "type": "history", "timestamp": "2026-11-21T00:00:00Z",
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Parameters",
                                                                           "parameter": params},
                       "request": {"method": "GET", "url": "Subscription/test/$status"},
                       "response": {"status": "200"}}]}


def test_redelivered_to_two_replicas_makes_one_note(services, fhir_server, dictation):
    source = recording(fhir_server, dictation.audio)
    notification = backport("event-notification", f"{fhir_server.base}/DocumentReference/{source['id']}")
    deliveries = [service.url + "/fhir/notify" for service in services for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(len(deliveries)) as pool:
        answers = list(pool.map(lambda url: httpx.post(url, json=notification, headers=HEADER, timeout=10),
                                deliveries))
    assert [a.status_code for a in answers] == [200] * 6
    assert_one_note(fhir_server, source)
    assert len(task_of(fhir_server, source)) == 1


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
def test_handshake_and_heartbeat_are_answered_without_work(services, kind):
    answer = httpx.post(services[0].url + "/fhir/notify", json=backport(kind), headers=HEADER, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/fhir+json")
    assert f"{kind}: nothing to do" in answer.json()["issue"][0]["diagnostics"]


def test_a_wrong_secret_is_refused_and_nothing_is_fetched(services, fhir_server, dictation):
    source = recording(fhir_server, dictation.audio)
    for headers in ({**HEADER, "X-Scribe-Secret": "wrong"}, {"Content-Type": "application/fhir+json"}):
        answer = httpx.put(f"{services[0].url}/fhir/notify/DocumentReference/{source['id']}", json=source,
                           headers=headers, timeout=10)
        assert answer.status_code == 401 and answer.json()["resourceType"] == "OperationOutcome"
        assert "X-Scribe-Secret" in answer.json()["issue"][0]["diagnostics"]
    # Absence: no Task appears (a quiet window; the refusals were answered before any work could be queued).
    holds(lambda: task_of(fhir_server, source) == [], for_s=2, interval=0.5, what="no Task for the recording",
          detail=lambda: task_of(fhir_server, source))


def test_a_source_without_audio_fails_its_task_with_the_reason(services, fhir_server, dictation):
    source = recording(fhir_server, b"not audio at all, just text", content_type="text/plain")
    answer = httpx.put(f"{services[0].url}/fhir/notify/DocumentReference/{source['id']}", json=source,
                       headers=HEADER, timeout=10)
    assert answer.status_code == 200
    task = wait_for_task(fhir_server, source, "failed", timeout_s=30)
    assert "no audio/* content" in task["statusReason"]["text"]
    assert notes_from(fhir_server, source) == []


def test_a_bad_notification_gets_an_operation_outcome(services):
    answer = httpx.post(services[0].url + "/fhir/notify", content=b"{not json", headers=HEADER, timeout=10)
    assert answer.status_code == 400 and answer.json()["issue"][0]["diagnostics"] == \
        "the notification body is not JSON"


def test_a_service_killed_mid_job_is_taken_over_after_the_lease(tmp_path_factory, fhir_server, dictation):
    doomed = _service(tmp_path_factory, fhir_server, "doomed")
    source = recording(fhir_server, dictation.audio)
    httpx.put(f"{doomed.url}/fhir/notify/DocumentReference/{source['id']}", json=source, headers=HEADER,
              timeout=10).raise_for_status()
    wait_for_task(fhir_server, source, "in-progress", timeout_s=30)
    os.kill(doomed.process.pid, signal.SIGKILL)  # mid-job: the Task stays in-progress, no note yet
    doomed.process.wait(timeout=10)
    assert notes_from(fhir_server, source) == [] and task_of(fhir_server, source)[0]["status"] == "in-progress"
    heir = _service(tmp_path_factory, fhir_server, "heir", SCRIBE_SUBSCRIPTIONS__LEASE_S="3",
                    SCRIBE_SUBSCRIPTIONS__RECOVERY_INTERVAL_S="1")
    try:
        assert_one_note(fhir_server, source)
    finally:
        stop_server(heir)


def test_an_unreachable_ehr_leaves_the_job_to_the_lease_not_failed(tmp_path_factory, fhir_server, proxy, dictation):
    """The EHR stops answering after the Task is claimed, when the note is written: the Task is not marked failed
    (the recording is fine), it stays in progress; once the EHR answers again the lease recovery does the job."""
    service = start_server(tmp_path_factory.mktemp("flaky") / "server.log", **TEST_LIMITS,
                           SCRIBE_FHIR__BASE_URL=proxy.url, SCRIBE_SUBSCRIPTIONS__SECRET=SECRET,
                           SCRIBE_SUBSCRIPTIONS__LEASE_S="3", SCRIBE_SUBSCRIPTIONS__RECOVERY_INTERVAL_S="1",
                           SCRIBE_FHIR__RETRIES="1")
    try:
        source = recording(fhir_server, dictation.audio)
        proxy.faults.reset()
        proxy.faults.pass_first, proxy.faults.fail_next = 1, 1000  # the claim passes; the note's write gets 503s
        httpx.put(f"{service.url}/fhir/notify/DocumentReference/{source['id']}", json=source, headers=HEADER,
                  timeout=10).raise_for_status()

        def taken_over_and_failed_again() -> bool:
            """After the write and its one retry failed: past the 3 s lease the recovery took the Task over (its
            If-Match PUT) and failed to write again."""
            seen = list(proxy.faults.seen)
            failed = [i for i, s in enumerate(seen) if s.startswith("POST / 503")]
            assert len(failed) >= 2, seen  # the write and its one retry
            taken = [i for i, s in enumerate(seen) if s.startswith("PUT /Task/") and i > failed[1]]
            assert taken and failed[-1] > taken[0], seen
            return True

        wait_for(taken_over_and_failed_again, timeout=90, interval=0.5,
                 what="the lease recovery to take the Task over and fail to write again")
        assert task_of(fhir_server, source)[0]["status"] == "in-progress" and notes_from(fhir_server, source) == []
        proxy.faults.reset()
        task = wait_for_task(fhir_server, source, "completed", timeout_s=60)
        notes = notes_from(fhir_server, source)
        assert len(notes) == 1 and task["output"][0]["valueReference"]["reference"] == \
            f"DocumentReference/{notes[0]['id']}"
    finally:
        proxy.faults.reset()
        stop_server(service)
