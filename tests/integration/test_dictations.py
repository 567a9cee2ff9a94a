"""Dictation -> note in a real FHIR server (sekmet-fhir over HTTP), end to end through the running service."""

import base64
import json
import concurrent.futures
import uuid

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER, OTHER_ENCOUNTER
from tests.integration.test_bad_requests import assert_problem
from tests.support.fhir_validation import errors
from tests.support.profiles import violations
from tests.support.wer import wer

@pytest.fixture(scope="module")
def server(fhir_service):
    """Here the service writes to the parametrized FHIR server (sekmet-fhir and HAPI)."""
    return fhir_service


FORM = {"patient": DEMO_PATIENT, "encounter": DEMO_ENCOUNTER, "author": f"Practitioner/{DEMO_PRACTITIONER}"}


def dictate(server, audio: bytes, path: str = "/v1/dictations", headers: dict | None = None, **form) -> httpx.Response:
    return httpx.post(server.url + path, files={"file": ("note.ogg", audio)}, data={**FORM, **form},
                      headers=headers or {}, timeout=120)


def key() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_dictation_lands_in_the_ehr(server, fhir_server, dictation):
    response = dictate(server, dictation.audio, headers={"Idempotency-Key": key()})
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == body["document_reference_url"]
    assert body["created"] is True and body["atomic"] is True

    doc = httpx.get(body["document_reference_url"]).json()
    assert doc["status"] == "current" and doc["docStatus"] == "preliminary"
    assert doc["subject"] == {"reference": f"Patient/{DEMO_PATIENT}"}
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{DEMO_ENCOUNTER}"}]
    assert doc["author"] == [{"reference": f"Practitioner/{DEMO_PRACTITIONER}"}]
    assert doc["type"]["coding"][0]["code"] == "11506-3"
    assert doc["category"][0]["coding"][0]["code"] == "clinical-note"
    text = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    assert text == body["draft"]["text"] and wer(dictation.reference, text) < 0.2
    xhtml = base64.b64decode(doc["content"][1]["attachment"]["data"]).decode()
    assert xhtml.startswith('<div xmlns="http://www.w3.org/1999/xhtml"><h3>Chief complaint</h3>')

    audit = httpx.get(f"{fhir_server.base}/AuditEvent/{body['audit_event_id']}").json()
    whats = [e["what"].get("reference") for e in audit["entity"]]
    assert f"Patient/{DEMO_PATIENT}" in whats and f"DocumentReference/{doc['id']}" in whats
    assert audit["action"] == "C" and audit["outcome"] == "0"
    # References and identifiers only: nothing of the note, no names.
    flat = str(audit).lower()
    assert "chest" not in flat and "testpatient" not in flat and "example" not in flat

    for resource in (doc, audit):
        assert errors(resource) == []
        assert violations(resource) == []
        assert fhir_server.validation_errors(resource) == []


def test_same_dictation_twice_is_one_note(server, fhir_server, dictation):
    first = dictate(server, dictation.audio, note_type="11488-4")
    second = dictate(server, dictation.audio, note_type="11488-4")
    assert (first.status_code, second.status_code) == (201, 200), second.text
    assert first.json()["document_reference_id"] == second.json()["document_reference_id"]
    identifier = first.json()["draft"]["identifier"]
    found = fhir_server.search("DocumentReference", identifier=f"{identifier['system']}|{identifier['value']}")
    assert len(found) == 1


def test_review_then_commit(server, fhir_server, dictation):
    draft = dictate(server, dictation.audio, path="/v1/dictations/draft", headers={"Idempotency-Key": key()})
    assert draft.status_code == 200, draft.text
    body = draft.json()
    assert body["doc_status"] == "final" and body["resources"]["DocumentReference"]["docStatus"] == "final"
    assert not fhir_server.search("DocumentReference", identifier=f"{body['identifier']['system']}|"
                                                                   f"{body['identifier']['value']}")
    for resource in body["resources"].values():
        assert errors(resource) == [] and violations(resource) == []
        assert fhir_server.validation_errors(resource) == []
    # The clinician fixes a mis-heard dose during review.
    body["text"] = body["text"] + " Addendum: atorvastatin 40 milligrams."
    committed = httpx.post(server.url + "/v1/dictations/commit", json=body, timeout=60)
    assert committed.status_code == 201, committed.text
    doc = httpx.get(committed.json()["document_reference_url"]).json()
    assert doc["docStatus"] == "final"
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode().endswith("atorvastatin 40 milligrams.")
    again = httpx.post(server.url + "/v1/dictations/commit", json=body, timeout=60)
    assert again.status_code == 200 and again.json()["document_reference_id"] == doc["id"]

    body["text"] = "a different note under the same key"
    conflict = httpx.post(server.url + "/v1/dictations/commit", json=body, timeout=60)
    assert_problem(conflict, 409, "conflict", "already exists for this patient")
    assert conflict.json()["draft"]["text"] == "a different note under the same key"  # nothing lost


def test_eight_concurrent_commits_make_one_note(server, fhir_server, dictation):
    body = dictate(server, dictation.audio, path="/v1/dictations/draft", headers={"Idempotency-Key": key()}).json()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: httpx.post(server.url + "/v1/dictations/commit", json=body, timeout=60),
                                  range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["document_reference_id"] for r in responses}) == 1
    assert len(fhir_server.search("DocumentReference",
                                  identifier=f"{body['identifier']['system']}|{body['identifier']['value']}")) == 1


def test_three_concurrent_identical_dictations_make_one_note(server, fhir_server, dictations):
    audio = dictations[1].audio
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: dictate(server, audio, note_type="34117-2"), range(3)))
    assert sorted(r.status_code for r in responses) == [200, 200, 201], [r.text[:200] for r in responses]
    assert len({r.json()["document_reference_id"] for r in responses}) == 1


@pytest.mark.parametrize("form, fragment", [
    ({"encounter": OTHER_ENCOUNTER}, f"Encounter/{OTHER_ENCOUNTER} belongs to a different patient"),
    ({"patient": "no-such-patient"}, "Patient/no-such-patient does not exist"),
    ({"encounter": "no-such-encounter"}, "Encounter/no-such-encounter does not exist"),
    ({"author": "Patient/123"}, "author: Value error, must be Practitioner/<id>"),
    ({"patient": "../../metadata"}, "patient: Value error, must be a FHIR id"),
])
def test_wrong_context_is_refused_before_transcribing(server, dictation, form, fragment):
    assert_problem(dictate(server, dictation.audio, **form), 422, "unprocessable", fragment)


def test_unknown_note_type(server, dictation):
    assert_problem(dictate(server, dictation.audio, note_type="99999-9"), 400, "bad-request",
                   "not one of 11506-3 (Progress note)")


def test_bad_idempotency_key(server, dictation):
    assert_problem(dictate(server, dictation.audio, headers={"Idempotency-Key": "x"}), 400, "bad-request",
                   "Idempotency-Key must be 8-128")


def test_commit_of_a_malformed_draft(server):
    assert_problem(httpx.post(server.url + "/v1/dictations/commit", json={"text": "x"}), 422, "invalid-request",
                   "body.identifier: Field required")


@pytest.mark.parametrize("fhir_server", ["hapi"], indirect=True)  # $validate against our profiles is HAPI's
def test_hapi_validates_against_our_uploaded_profiles(fhir_server):
    """HAPI has our StructureDefinitions: a note without docStatus, or an audit with free text, is flagged."""
    from service.config import load_settings
    from service.documents.draft import AudioInfo, DictationContext, Draft, Identifier
    from service.documents.resources import write_plan
    from service.sections.note import StructuredNote
    from datetime import datetime, timezone

    settings = load_settings().fhir
    draft = Draft(identifier=Identifier(system=settings.identifier_system, value="validate-1"),
                  context=DictationContext(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER,
                                           author=f"Practitioner/{DEMO_PRACTITIONER}", note_type="11506-3"),
                  doc_status="final", text="Plan: rest.", transcript="plan rest",
                  note=StructuredNote(text="Plan: rest.", sections=[], findings=[]), language="en",
                  audio=AudioInfo(sha256="0" * 64, duration_s=2.0, container="ogg"), model="tiny.en",
                  model_revision="test", dictated_at=datetime.now(timezone.utc))
    plan = write_plan(draft, settings, "req-v")
    doc = {k: v for k, v in plan.document_reference.items() if k != "docStatus"}
    assert any("docStatus" in e for e in fhir_server.validation_errors(doc))
    audit = {**plan.audit_event, "entity": [{**plan.audit_event["entity"][0], "description": "Alex Testpatient"},
                                            *plan.audit_event["entity"][1:]]}
    assert any("daud-6" in e for e in fhir_server.validation_errors(audit))


def test_draft_streams_segments_then_the_draft(server, dictation):
    events = []
    with httpx.stream("POST", server.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                      data=FORM, headers={"Accept": "text/event-stream"}, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert "\r" not in raw  # LF-framed, as the app's page reads it
    for block in raw.split("\n\n"):  # one event per blank-line-separated block, as the page splits them
        events += [json.loads(line[6:]) for line in block.split("\n") if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "draft" and kinds.count("segment") >= 3 and set(kinds[:-1]) == {"segment"}
    heard = "".join(e["text"] for e in events if e["type"] == "segment").strip()
    assert events[-1]["draft"]["transcript"] == heard
    assert all(0 <= e["start"] <= e["end"] <= e["duration"] + 0.5 for e in events[:-1])


def test_a_streamed_draft_stops_decoding_when_the_client_leaves(server, dictation, tmp_path):
    """A client that leaves after the first segment frees its worker: the engine stops at its next segment (logged
    as transcription.stopped, with how far it got) instead of decoding two minutes of audio for nobody."""
    import time

    from tests.conftest import ffmpeg

    source = tmp_path / "one.ogg"
    source.write_bytes(dictation.audio)
    (tmp_path / "list.txt").write_text(f"file '{source}'\n" * 3)
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c:a", "libopus", "-b:a", "24k",
           str(tmp_path / "long.ogg"))  # 2 min: well under the test limit, many segments
    logged = server.log().count('"event": "transcription.stopped"')
    with httpx.stream("POST", server.url + "/v1/dictations/draft", data=FORM,
                      files={"file": ("a.ogg", (tmp_path / "long.ogg").read_bytes())},
                      headers={"Accept": "text/event-stream"}, timeout=120) as response:
        assert response.status_code == 200
        assert any(line.startswith("event: segment") for line in response.iter_lines())  # then hang up
    deadline = time.monotonic() + 60
    while server.log().count('"event": "transcription.stopped"') == logged:
        assert time.monotonic() < deadline, "the engine went on decoding after the client left"
        time.sleep(0.2)
    stopped = [json.loads(line) for line in server.log().splitlines() if '"transcription.stopped"' in line][-1]
    assert stopped["audio_s"] > 115 and stopped["decoded_s"] < stopped["audio_s"] - 30


def test_streamed_draft_reports_an_unreachable_ehr_with_the_draft(tmp_path, dictation):
    from tests.conftest import TEST_LIMITS, free_port, start_server, stop_server

    lonely = start_server(tmp_path / "server.log", **TEST_LIMITS, SCRIBE_FHIR__RETRIES="0",
                          SCRIBE_FHIR__BASE_URL=f"http://127.0.0.1:{free_port()}/fhir")
    try:
        with httpx.stream("POST", lonely.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                          data=FORM, headers={"Accept": "text/event-stream"}, timeout=120) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    finally:
        stop_server(lonely)
    assert events[-1]["type"] == "error" and events[-1]["problem"]["status"] == 503
    assert "chest pain" in events[-1]["problem"]["draft"]["text"].lower()  # nothing lost
