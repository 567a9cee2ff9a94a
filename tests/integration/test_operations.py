"""Operating the service (issue 15): Prometheus metrics without patient data, the metrics port, SIGTERM as a drain
that loses nothing (work in hand finishes, queued Subscription work goes to another replica at once), and a
Subscription note dated by its recording. Real processes, real FHIR servers (sekmet-fhir and HAPI with its 60 s
search cache on)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import signal
import subprocess
import time
import uuid

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER
from tests.conftest import TEST_LIMITS, free_port, start_server, stop_server
from tests.integration.test_subscriptions import (HEADER, SECRET, assert_one_note, notes_from, recording, task_of,
                                                  wait_for_task)
from tests.support.waiting import wait_for

FORM = {"patient": DEMO_PATIENT, "encounter": DEMO_ENCOUNTER, "author": f"Practitioner/{DEMO_PRACTITIONER}"}
REQUIRED = ["fhir_scribe_transcription_jobs_running", "fhir_scribe_transcription_jobs_waiting",
            "fhir_scribe_transcription_rejected_total", "fhir_scribe_audio_seconds_total",
            "fhir_scribe_transcription_seconds", "fhir_scribe_http_request_duration_seconds",
            "fhir_scribe_fhir_requests_total", "fhir_scribe_notes_written_total",
            "fhir_scribe_subscription_jobs_total", "fhir_scribe_subscription_queue_depth",
            "fhir_scribe_vocabulary_lookups_total", "fhir_scribe_vocabulary_lookup_seconds"]
_SAMPLE = re.compile(r'^(?P<name>[a-z_:]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def families(samples: dict) -> set[str]:
    found = set()
    for name, _ in samples:
        found.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return found


def longer(dictation, tmp_path, copies: int) -> bytes:
    """The dictation said `copies` times over (ffmpeg concat): audio that keeps a worker busy for a while."""
    out = tmp_path / f"x{copies}.ogg"
    inputs = [arg for _ in range(copies) for arg in ("-i", str(dictation.path))]
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex",
                    "".join(f"[{i}:a]" for i in range(copies)) + f"concat=n={copies}:v=0:a=1", "-c:a", "libopus",
                    str(out)], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def service(tmp_path_factory, fhir_server):
    running = start_server(tmp_path_factory.mktemp(f"ops-{fhir_server.kind}") / "server.log", **TEST_LIMITS,
                           SCRIBE_FHIR__BASE_URL=fhir_server.base, SCRIBE_SUBSCRIPTIONS__SECRET=SECRET)
    yield running
    stop_server(running)


def test_metrics_count_the_work_and_name_no_patient(service, fhir_server, dictation):
    before = scrape(service.url)
    key = f"ops-{uuid.uuid4().hex}"
    for _ in range(2):  # the second is a retry: an existing note, nothing new
        response = httpx.post(service.url + "/v1/dictations", files={"file": ("n.ogg", dictation.audio)}, data=FORM,
                              headers={"Idempotency-Key": key}, timeout=120)
        assert response.status_code in (200, 201), response.text
    note_id = response.json()["document_reference_id"]
    source = recording(fhir_server, dictation.audio)
    httpx.put(f"{service.url}/fhir/notify/DocumentReference/{source['id']}", json=source, headers=HEADER,
              timeout=10).raise_for_status()
    assert_one_note(fhir_server, source)
    after = scrape(service.url)

    assert set(REQUIRED) <= families(after), set(REQUIRED) - families(after)
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("fhir_scribe_notes_written_total", outcome="created") == 2  # the dictation and the job's note
    assert delta("fhir_scribe_notes_written_total", outcome="existing") == 1
    assert delta("fhir_scribe_subscription_jobs_total", outcome="completed") == 1
    assert delta("fhir_scribe_transcription_seconds_count", model="tiny.en") == 3
    assert 3 * 35 < delta("fhir_scribe_audio_seconds_total") < 3 * 45  # the fixture is 39.9 s of speech
    assert delta("fhir_scribe_fhir_requests_total", interaction="transaction", outcome="2xx") >= 4  # notes + claim
    assert delta("fhir_scribe_vocabulary_lookups_total", outcome="applied") == 3
    assert delta("fhir_scribe_http_request_duration_seconds_count", route="/v1/dictations", method="POST",
                 status="201") >= 1
    # Routes are templates; no label holds a patient, an encounter, a note, a key or a recording.
    routes = {v for (_, labels) in after for k, v in labels if k == "route"}
    assert "/fhir/notify/{resource_type}/{resource_id}" in routes
    flat = " ".join(f"{k}={v}" for (_, labels) in after for k, v in labels)
    for secret in (DEMO_PATIENT, DEMO_ENCOUNTER, DEMO_PRACTITIONER, key, note_id, source["id"]):
        assert secret not in flat
    assert value(after, "fhir_scribe_transcription_jobs_running") == 0
    assert value(after, "fhir_scribe_transcription_jobs_waiting") == 0


def test_metrics_move_to_their_own_port(tmp_path):
    port = free_port()
    running = start_server(tmp_path / "server.log", SCRIBE_SERVER__METRICS_PORT=str(port))
    try:
        assert httpx.get(running.url + "/metrics", timeout=10).status_code == 404
        samples = scrape(f"http://127.0.0.1:{port}")
        assert value(samples, "fhir_scribe_draining") == 0
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 404  # nothing else there
    finally:
        stop_server(running)


def _replica(tmp_path_factory, fhir_server, name: str, **env: str):
    return start_server(tmp_path_factory.mktemp(name) / "server.log", **TEST_LIMITS,
                        SCRIBE_FHIR__BASE_URL=fhir_server.base, SCRIBE_SUBSCRIPTIONS__SECRET=SECRET,
                        SCRIBE_SUBSCRIPTIONS__LEASE_S="600",  # nothing here may wait for the lease
                        **{"SCRIBE_SUBSCRIPTIONS__RECOVERY_INTERVAL_S": "2", **env})


def test_sigterm_finishes_work_in_hand_and_hands_queued_jobs_to_another_replica(tmp_path_factory, tmp_path,
                                                                                 fhir_server, dictation):
    """SIGTERM with two transcriptions on the workers, a Subscription job whose audio waits for a worker, and a
    second job queued behind it: both transcriptions answer 200; the waiting job goes back to ready and the queued
    one (a ready Task since it was accepted) stays so; a second replica completes both within seconds (the lease is
    600 s), one note each; meanwhile new work is refused with 503 and /readyz says draining."""
    # The leaving replica's own recovery loop is slowed so its queue, not the loop, holds the second job; the heir
    # comes up after the SIGTERM, as a rolling restart's new replica does.
    leaving = _replica(tmp_path_factory, fhir_server, "leaving", SCRIBE_SUBSCRIPTIONS__WORKERS="1",
                       SCRIBE_TRANSCRIPTION__NUM_WORKERS="2", SCRIBE_SUBSCRIPTIONS__RECOVERY_INTERVAL_S="600")
    heir = None

    def reaches(gauge: str, count: int) -> None:
        wait_for(lambda: value(scrape(leaving.url), gauge) >= count, timeout=120, what=f"{gauge} to reach {count}")

    try:
        in_hand, queued = (recording(fhir_server, dictation.audio) for _ in range(2))
        audio = longer(dictation, tmp_path, 3)  # 2 min: both workers stay busy well past the SIGTERM
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            transcriptions = [pool.submit(httpx.post, leaving.url + "/v1/audio/transcriptions",
                                          files={"file": ("a.ogg", audio)}, data={"model": "whisper-1"},
                                          timeout=180) for _ in range(2)]
            reaches("fhir_scribe_transcription_jobs_running", 2)
            for source in (in_hand, queued):
                httpx.put(f"{leaving.url}/fhir/notify/DocumentReference/{source['id']}", json=source,
                          headers=HEADER, timeout=10).raise_for_status()
            reaches("fhir_scribe_transcription_jobs_waiting", 1)  # the first job's audio, behind the two
            assert [t["status"] for t in task_of(fhir_server, in_hand)] == ["in-progress"]
            assert [t["status"] for t in task_of(fhir_server, queued)] == ["ready"]  # accepted, in the queue
            leaving.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            ready = wait_for(lambda: (r := httpx.get(leaving.url + "/readyz", timeout=10)).status_code == 503 and r,
                             timeout=30, what="/readyz to say the replica is draining")
            assert ready.json()["status"] == "draining"
            refused = httpx.post(leaving.url + "/v1/audio/transcriptions", files={"file": ("a.ogg", b"x" * 100)},
                                 data={"model": "whisper-1"}, timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["type"].endswith(":draining")
            heir = _replica(tmp_path_factory, fhir_server, "heir")
            answers = [t.result() for t in transcriptions]
        assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
        assert all(len(a.json()["text"]) > 600 for a in answers)

        tasks = [wait_for_task(fhir_server, source, "completed", timeout_s=90) for source in (in_hand, queued)]
        assert time.monotonic() - signalled < 120  # not the 600 s lease
        for source in (in_hand, queued):
            assert_one_note(fhir_server, source)
        assert leaving.process.wait(timeout=60) is not None
        log = leaving.log()
        assert '"event": "drain.done"' in log and '"requests_finished": true' in log, log[-3000:]
        assert '"outcome": "released"' in log and '"handed_back": 1' in log, log[-3000:]
        assert '"outcome": "completed"' not in log  # both jobs were done by the heir
        assert '"event": "drain.start"' not in heir.log()
        assert tasks[0]["id"] != tasks[1]["id"]
    finally:
        stop_server(leaving)
        if heir is not None:
            stop_server(heir)


def test_a_subscription_note_is_dated_by_its_recording(service, fhir_server, dictation):
    """The note's clinical time is when the recording was made (its attachment's creation + its length), not when
    fhir-scribe happened to process it."""
    recorded = "2026-11-29T08:15:00+00:00"
    source = recording(fhir_server, dictation.audio)
    source["content"][0]["attachment"]["creation"] = recorded
    response = httpx.put(f"{fhir_server.base}/DocumentReference/{source['id']}", json=source,
                         headers={"Content-Type": "application/fhir+json", "Prefer": "return=representation"},
                         timeout=60)
    assert response.status_code == 200, response.text
    source = response.json()
    httpx.put(f"{service.url}/fhir/notify/DocumentReference/{source['id']}", json=source, headers=HEADER,
              timeout=10).raise_for_status()
    note = assert_one_note(fhir_server, source)
    period = note["context"]["period"]
    start = period["start"].replace("Z", "+00:00")
    assert start.startswith("2026-11-29T08:15:00"), period
    assert period["end"].startswith("2026-11-29T08:15:39") or period["end"].startswith("2026-11-29T08:15:40"), period
    assert notes_from(fhir_server, source) == [note]



def test_a_drain_that_runs_out_answers_503_to_retry_never_500(tmp_path, dictation):
    """One worker, three transcriptions: SIGTERM answers the two still waiting for the worker at once (503
    draining: nothing was done, retry elsewhere), and the long one still running when the 1 s drain ends gets a
    503 to retry as well: no 500, no dropped connection, nothing silently lost."""
    long_audio = longer(dictation, tmp_path, 6)  # 4 min: far longer to transcribe than the 1 s drain + 3 s grace
    running = start_server(tmp_path / "server.log", **{**TEST_LIMITS, "SCRIBE_AUDIO__MAX_DURATION_S": "600"},
                           SCRIBE_TRANSCRIPTION__NUM_WORKERS="1", SCRIBE_SERVER__DRAIN_S="1")
    post = lambda audio: httpx.post(running.url + "/v1/audio/transcriptions",  # noqa: E731
                                    files={"file": ("a.ogg", audio)}, data={"model": "whisper-1"}, timeout=120)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, long_audio)
            wait_for(lambda: value(scrape(running.url), "fhir_scribe_transcription_jobs_running") >= 1,
                     timeout=60, what="the long transcription on the one worker")
            waiting = [pool.submit(post, dictation.audio) for _ in range(2)]
            wait_for(lambda: value(scrape(running.url), "fhir_scribe_transcription_jobs_waiting") >= 2,
                     timeout=60, what="two transcriptions waiting for the worker")
            running.process.send_signal(signal.SIGTERM)
            refused = [w.result() for w in waiting]
            cut_off = first.result()
        for answer in refused:
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
            assert "had not started on this audio" in answer.json()["detail"]
        # At once, not behind the running job: both were answered while the drain still waited for that job (their
        # request lines are logged before drain.done, which comes when the 1 s drain runs out on it).
        lines = [json.loads(line) for line in running.log().splitlines() if line.startswith('{"')]
        done_at = next(i for i, line in enumerate(lines) if line.get("event") == "drain.done")
        answered = [i for i, line in enumerate(lines) if line.get("event") == "http.request" and
                    line.get("route") == "/v1/audio/transcriptions" and line.get("status") == 503]
        assert sum(i < done_at for i in answered) == 2, (done_at, answered, lines[-20:])
        assert lines[done_at].get("requests_finished") is False  # the long one was still in hand
        assert cut_off.status_code == 503 and cut_off.headers["retry-after"] == "1", cut_off.text[:300]
        assert "stopped before your request finished" in cut_off.json()["detail"]
        running.process.wait(timeout=30)
        assert '"status": 500' not in running.log()
    finally:
        stop_server(running)
