"""Non-negotiables proven on a running server: nothing on disk, nothing PHI in logs, bounded load."""

import re
import subprocess
import threading

import httpx
import pytest

from tests.conftest import TEST_LIMITS, require_tool, start_server, stop_server
from tests.support.waiting import metric, wait_for

TRANSCRIPTIONS = "/v1/audio/transcriptions"
# System calls that create, change or remove a file system entry.
_WRITE_OPEN = re.compile(r"open(at)?\(.*(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC)")
_MUTATING = re.compile(r"\b(creat|mkdir|mkdirat|rename|renameat2?|link|linkat|symlink|symlinkat|unlink|unlinkat|"
                       r"truncate|ftruncate|mknod|mknodat)\(")
_HARMLESS_PATHS = ('"/dev/null"', '"/proc/', '"/sys/')


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("traced") / "server.log", **TEST_LIMITS)
    yield running
    stop_server(running)


def test_no_file_is_written_while_transcribing(traced_server, encoded, dictation, tmp_path):
    require_tool("strace")
    trace, said = tmp_path / "trace.txt", tmp_path / "strace.err"
    with said.open("wb") as stderr:
        strace = subprocess.Popen(["strace", "-f", "-p", str(traced_server.process.pid), "-o", str(trace),
                                   "-e", "trace=%file,%desc,accept4"], stderr=stderr)

    def attached() -> bool:  # strace says "Process N attached with K threads" once it is on every thread
        assert strace.poll() is None, said.read_text()
        return "attached" in said.read_text()

    try:
        wait_for(attached, timeout=60, interval=0.05, what="strace to attach to every thread of the service")
        url = traced_server.url + TRANSCRIPTIONS
        # A WAV over 1 MiB (where Starlette's own parser would spool to a temp file), a webm, a stream, a refusal.
        assert len(encoded["wav"]) > 1024 * 1024
        for name in ("wav", "webm"):
            assert httpx.post(url, files={"file": ("a", encoded[name])}, timeout=60).status_code == 200
        with httpx.stream("POST", url, files={"file": ("a", dictation.audio)}, data={"stream": "true"},
                          timeout=60) as response:
            assert response.status_code == 200 and "[DONE]" in response.read().decode()
        assert httpx.post(url, files={"file": ("a", b"RIFF" + bytes(9 * 1024 * 1024))}, timeout=60).status_code == 413
    finally:
        strace.terminate()
        strace.wait(timeout=10)
    lines = trace.read_text().splitlines()
    assert sum("accept4(" in line for line in lines) >= 4, "strace did not see the requests"
    writes = [line for line in lines
              if (_WRITE_OPEN.search(line) or _MUTATING.search(line)) and not any(p in line for p in _HARMLESS_PATHS)]
    assert writes == []


def test_logs_carry_no_phi(traced_server, dictation):
    phi_name = "Doe_Jane_MRN4711_2026-11-21.ogg"
    prompt = "Patient Jane Doe, lisinopril"
    requests = traced_server.log().count('"event": "http.request"')
    response = httpx.post(traced_server.url + TRANSCRIPTIONS, files={"file": (phi_name, dictation.audio)},
                          data={"prompt": prompt, "response_format": "verbose_json"}, timeout=60)
    assert response.status_code == 200 and "angina" in response.json()["text"].lower()
    httpx.post(traced_server.url + TRANSCRIPTIONS, files={"file": (phi_name, b"not audio at all")}, timeout=60)
    # Both requests are in the log (each ends with its http.request line) before it is read.
    log = wait_for(lambda: (text := traced_server.log()).count('"event": "http.request"') >= requests + 2 and text,
                   timeout=30, what="both requests' lines in the service log")
    assert '"event": "transcription.done"' in log and '"audio_s": 39.9' in log  # the log does record the work
    for secret in ("Doe", "Jane", "MRN4711", "angina", "lisinopril", "chest pain", "not audio at all",
                   "complaint"):
        assert secret.lower() not in log.lower(), f"{secret!r} leaked into the log"


def test_full_pool_answers_503_with_retry_after(tmp_path, dictation):
    server = start_server(tmp_path / "server.log", SCRIBE_TRANSCRIPTION__NUM_WORKERS="1",
                          SCRIBE_TRANSCRIPTION__MAX_QUEUE="0", SCRIBE_TRANSCRIPTION__RETRY_AFTER_S="7")
    try:
        url = server.url + TRANSCRIPTIONS
        first: dict[str, int] = {}
        worker = threading.Thread(target=lambda: first.update(
            status=httpx.post(url, files={"file": ("a", dictation.audio)}, timeout=60).status_code))
        worker.start()
        wait_for(lambda: metric(server.url, "fhir_scribe_transcription_jobs_running") >= 1, timeout=60,
                 what="the first transcription on the one worker")
        second = httpx.post(url, files={"file": ("a", dictation.audio)}, timeout=60)
        worker.join()
        assert first["status"] == 200
        assert second.status_code == 503 and second.headers["retry-after"] == "7"
        assert second.json()["type"] == "urn:fhir-scribe:problem:overloaded"

        # A streaming client that hangs up must not keep its slot.
        with httpx.stream("POST", url, files={"file": ("a", dictation.audio)}, data={"stream": "true"},
                          timeout=60) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        # The slot comes back: polled (a 503 is cheap), with a generous deadline; then it transcribes.
        wait_for(lambda: httpx.post(url, files={"file": ("a", dictation.audio)}, timeout=60).status_code == 200,
                 timeout=60, interval=0.5, what="the slot to be released after the client disconnected")
    finally:
        stop_server(server)
