"""When the EHR fails, nothing is lost and nothing is duplicated. A real FHIR server behind a fault-injecting
proxy, a service pointed at the proxy, and a FHIR server that is stopped and restarted."""

import asyncio
import uuid

import httpx
import pytest

from service.config import load_settings
from service.documents.draft import Identifier
from service.documents.resources import WritePlan
from service.errors import ScribeError
from service.fhir.client import FhirClient, FhirRejected, outcome_issues, parse_location
from service.fhir.writer import NoteWriter
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.integration.test_bad_requests import assert_problem
from tests.integration.test_dictations import FORM

FAST_RETRIES = {"SCRIBE_FHIR__RETRIES": "2", "SCRIBE_FHIR__BACKOFF_S": "0.05", "SCRIBE_FHIR__TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def fhir(fhir_server):
    """The session's FHIR server of each kind (sekmet-fhir, HAPI): failures are the client's to handle alike."""
    return fhir_server


def _service_for(tmp_path_factory, fhir_base: str):
    running = start_server(tmp_path_factory.mktemp("svc") / "server.log", **TEST_LIMITS, **FAST_RETRIES,
                           SCRIBE_FHIR__BASE_URL=fhir_base)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def service(tmp_path_factory, proxy):
    """Writes through the fault-injecting proxy."""
    yield from _service_for(tmp_path_factory, proxy.url)


@pytest.fixture(scope="module")
def direct_service(tmp_path_factory, fhir):
    """Writes straight to the FHIR server (which a test stops and restarts)."""
    yield from _service_for(tmp_path_factory, fhir.base)


@pytest.fixture(autouse=True)
def clean_faults(request):
    """Clean faults around each test that has the proxy. Taken by name, not as an argument: an autouse fixture's
    arguments are every test's, and the proxy's would make the pure parser tests here start (and run once per)
    FHIR server."""
    if "proxy" not in request.fixturenames:
        yield
        return
    proxy = request.getfixturevalue("proxy")
    proxy.faults.reset()
    yield
    proxy.faults.reset()


def dictate(service, audio, **headers):
    return httpx.post(service.url + "/v1/dictations", files={"file": ("a.ogg", audio)}, data=FORM,
                      headers={"Idempotency-Key": f"k-{uuid.uuid4().hex}", **headers}, timeout=120)


def count(fhir, draft):
    ident = draft["identifier"]
    return len(fhir.search("DocumentReference", identifier=f"{ident['system']}|{ident['value']}"))


def test_transient_503s_are_retried_then_written_once(service, proxy, fhir, dictation):
    proxy.faults.fail_next, proxy.faults.status = 2, 503
    response = dictate(service, dictation.audio)
    assert response.status_code == 201, response.text
    posts = [s for s in proxy.faults.seen if s.startswith("POST")]
    assert posts == ["POST / 503", "POST / 503", "POST / 200"]
    assert count(fhir, response.json()["draft"]) == 1


def test_persistent_5xx_gives_a_bounded_retry_then_the_draft(service, proxy, fhir, dictation):
    proxy.faults.fail_next, proxy.faults.status = 100, 500
    response = dictate(service, dictation.audio)
    assert_problem(response, 502, "fhir-error", "the FHIR server answered 500: error transient: injected fault")
    assert len([s for s in proxy.faults.seen if s.startswith("POST")]) == 3  # 1 + retries(2), then stop
    draft = response.json()["draft"]
    assert "chest pain" in draft["text"].lower() and draft["context"]["patient"] == FORM["patient"]
    # The server comes back: the draft is committed once, however often it is sent.
    proxy.faults.reset()
    for expected in (201, 200):
        committed = httpx.post(service.url + "/v1/dictations/commit", json=draft, timeout=60)
        assert committed.status_code == expected, committed.text
    assert count(fhir, draft) == 1


def test_slow_server_times_out_and_the_late_write_is_not_duplicated(service, proxy, fhir, dictation):
    # Every write hangs 3 s, past the 2 s timeout, and the server still performs it when the proxy forwards it.
    # The first search-before-retry (~2.5 s) finds nothing, the retry times out too, the second search finds the
    # first write, landed late: the caller is told the note is there, and it is there once.
    proxy.faults.delay_s = 3.0
    response = dictate(service, dictation.audio)
    proxy.faults.reset()
    assert response.status_code == 200 and response.json()["created"] is False, response.text[:300]
    assert count(fhir, response.json()["draft"]) == 1  # the late first write and the retries are one note


def test_a_gateway_timeout_gives_504_and_the_draft(service, proxy, fhir, dictation):
    proxy.faults.fail_next, proxy.faults.status = 100, 504
    response = dictate(service, dictation.audio)
    proxy.faults.reset()
    assert_problem(response, 504, "fhir-timeout", "the FHIR server answered 504")
    draft = response.json()["draft"]
    committed = httpx.post(service.url + "/v1/dictations/commit", json=draft, timeout=60)
    assert committed.status_code == 201, committed.text
    assert count(fhir, draft) == 1


def test_a_busy_server_gets_the_wait_it_asks_for(service, proxy, fhir, dictation):
    """503 + Retry-After: 2 on the write: the retry comes after the 2 s the server asked for (the service's own
    backoff here is 0.05 s), and the note is written once."""
    proxy.faults.fail_next, proxy.faults.status, proxy.faults.retry_after = 1, 503, "2"
    response = dictate(service, dictation.audio)
    assert response.status_code == 201, response.text
    posts = [(seen, at) for seen, at in zip(proxy.faults.seen, proxy.faults.arrived) if seen.startswith("POST")]
    assert [seen for seen, _ in posts] == ["POST / 503", "POST / 200"]
    assert posts[1][1] - posts[0][1] >= 1.95, "the retry did not wait for the server's Retry-After"
    assert count(fhir, response.json()["draft"]) == 1


def test_a_server_asking_for_a_long_wait_is_answered_at_once_with_it(service, proxy, fhir, dictation):
    """429 + Retry-After: 120, past fhir.retry_after_max_s: no retry; the caller gets the server's Retry-After
    and the draft, and commits it when the server is back."""
    proxy.faults.fail_next, proxy.faults.status, proxy.faults.retry_after = 100, 429, "120"
    response = dictate(service, dictation.audio)
    assert_problem(response, 503, "fhir-unavailable", "the FHIR server answered 429: error transient: injected fault "
                                                      "and asked to retry after 120 s")
    assert response.headers["retry-after"] == "120"
    assert [seen for seen in proxy.faults.seen if seen.startswith("POST")] == ["POST / 429"]
    draft = response.json()["draft"]
    proxy.faults.reset()
    committed = httpx.post(service.url + "/v1/dictations/commit", json=draft, timeout=60)
    assert committed.status_code == 201, committed.text
    assert count(fhir, draft) == 1


def test_a_read_waits_for_an_http_date_retry_after(proxy):
    """Retry-After as an HTTP-date (RFC 9110 s10.2.3) on a read: waited until that time, then read."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    settings = load_settings().fhir.model_copy(update={"base_url": proxy.url, "retries": 2, "backoff_s": 0.05})
    proxy.faults.only_method, proxy.faults.fail_next, proxy.faults.status = "GET", 1, 503
    proxy.faults.retry_after = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3), usegmt=True)

    async def run():
        client = FhirClient(settings)
        try:
            return await client.read("Patient", FORM["patient"])
        finally:
            await client.aclose()

    assert asyncio.run(run())["id"] == FORM["patient"]
    assert proxy.faults.seen == ["GET /Patient/demo-patient 503", "GET /Patient/demo-patient 200"]
    assert proxy.faults.arrived[1] - proxy.faults.arrived[0] >= 1.5  # the date has whole seconds: 2-3 s from now


def test_fhir_server_down_then_back(direct_service, fhir, dictation):
    service = direct_service
    fhir.stop()
    try:
        response = dictate(service, dictation.audio)
        assert_problem(response, 503, "fhir-unavailable", "cannot reach the FHIR server (ConnectError)")
    finally:
        fhir.restart()
    draft = response.json()["draft"]
    assert draft["transcript"] and draft["resources"]["DocumentReference"]["subject"]["reference"] == \
        f"Patient/{FORM['patient']}"
    statuses = [httpx.post(service.url + "/v1/dictations/commit", json=draft, timeout=60).status_code
                for _ in range(2)]
    assert statuses == [201, 200]
    assert count(fhir, draft) == 1


def test_server_rejection_reports_its_operation_outcome(proxy):
    """The server's own validation error reaches the caller with its diagnostics, and is not retried."""
    settings = load_settings().fhir.model_copy(update={"base_url": proxy.url, "retries": 2, "backoff_s": 0.05})
    bad = {"resourceType": "DocumentReference", "status": "current", "flavour": "x",
           "content": [{"attachment": {"contentType": "text/plain"}}], "subject": {"reference": "Patient/demo-patient"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": bad, "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": "urn:uuid:2", "resource": bad, "request": {"method": "POST", "url": "DocumentReference"}}]}
    plan = WritePlan(bundle=bundle, document_reference=bad, audit_event={}, document_full_url="urn:uuid:1",
                    criteria={"identifier": "urn:x|rejected-1", "subject": "Patient/demo-patient"})

    async def run():
        client = FhirClient(settings)
        try:
            await NoteWriter(client).write(plan, Identifier(system="urn:x", value=uuid.uuid4().hex), "req")
        finally:
            await client.aclose()

    with pytest.raises(FhirRejected) as caught:
        asyncio.run(run())
    # The server's own words, whichever server: sekmet says "Extra inputs are not permitted
    # (DocumentReference.flavour)", HAPI "Unrecognized property 'flavour'" (422).
    assert caught.value.detail.startswith(("the FHIR server answered 400: error", "the FHIR server answered 422: error"))
    assert "flavour" in caught.value.extras["fhir_issues"][0]
    posts = [s for s in proxy.faults.seen if s.startswith("POST")]
    assert posts in (["POST / 400"], ["POST / 422"])  # sent once, not retried


@pytest.mark.parametrize("location, expected", [
    ("DocumentReference/abc/_history/1", ("DocumentReference", "abc", "1")),
    ("http://h:8080/fhir/DocumentReference/abc/_history/2", ("DocumentReference", "abc", "2")),
    ("https://ehr.example/r4/AuditEvent/a.b-c", ("AuditEvent", "a.b-c", None)),
    ("DocumentReference/abc", ("DocumentReference", "abc", None)),
])
def test_locations_absolute_and_relative(location, expected):
    parsed = parse_location(location)
    assert (parsed.type, parsed.id, parsed.version) == expected


def test_unreadable_location_and_non_outcome_bodies():
    with pytest.raises(ScribeError, match="unreadable location"):
        parse_location("not a location")
    assert outcome_issues({"resourceType": "Patient"}) == [] and outcome_issues(None) == []


def test_server_without_transactions_gets_two_requests_said_not_atomic(proxy, fhir):
    from datetime import datetime, timezone

    from service.documents.draft import AudioInfo, DictationContext, Draft
    from service.documents.resources import write_plan
    from service.sections.note import StructuredNote
    from tests.support.fhir_validation import errors

    proxy.faults.hide_transactions = True
    settings = load_settings().fhir.model_copy(update={"base_url": proxy.url})
    ctx = DictationContext(patient=FORM["patient"], encounter=FORM["encounter"], author=FORM["author"],
                           note_type="11506-3")
    draft = Draft(identifier=Identifier(system=settings.identifier_system, value=f"k-{uuid.uuid4().hex}"),
                  context=ctx, doc_status="final", text="Plan: rest.", transcript="plan colon rest period",
                  note=StructuredNote(text="Plan: rest.", sections=[], findings=[]), language="en",
                  audio=AudioInfo(sha256="0" * 64, duration_s=2.0, container="ogg"), model="tiny.en",
                  model_revision="test", dictated_at=datetime.now(timezone.utc))

    async def run():
        client = FhirClient(settings)
        writer = NoteWriter(client)
        try:
            first = await writer.write(write_plan(draft, settings, "req-1"), draft.identifier, "req-1")
            again = await writer.write(write_plan(draft, settings, "req-2"), draft.identifier, "req-2")
        finally:
            await client.aclose()
        return first, again

    first, again = asyncio.run(run())
    assert (first.created, first.atomic, again.created) == (True, False, False)
    assert [s.split()[:2] for s in proxy.faults.seen if s.startswith("POST")] == [
        ["POST", "/DocumentReference"], ["POST", "/AuditEvent"], ["POST", "/DocumentReference"], ["POST", "/AuditEvent"]]
    audit = httpx.get(f"{fhir.base}/AuditEvent/{first.audit_event_id}").json()
    assert {"reference": f"DocumentReference/{first.document_reference_id}"} in [e["what"] for e in audit["entity"]]
    assert errors(audit) == [] and errors(httpx.get(first.document_reference_url).json()) == []
    assert count(fhir, draft.model_dump()) == 1
