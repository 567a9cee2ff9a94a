"""Resource limits proven on a running server: oversized bodies of every kind are refused as they arrive without
the process holding them (server RSS read from /proc), tokens are checked before a JSON body is read, extra file
parts are refused when their headers arrive, and slow uploads neither hold transcription slots nor last forever.

Bodies are sent over raw sockets from generators (the test never holds 200 MB either), with the response read as
soon as the server answers, so a refusal that comes early is seen early. Every loop is bounded in time."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.waiting import metric, wait_for

MB = 1_000_000
BIG = 200 * MB  # each oversized body
RSS_GROWTH_LIMIT_KIB = 150 * 1024
CHUNK = 256 * 1024
NOTIFY = "/fhir/notify"
SECRET = "limits-test-secret"
NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port: refused at once, never reached
TRICKLERS = 12


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """The test server's limits (8 MiB uploads), auth off, the Subscription endpoint on (its EHR unreachable)."""
    running = start_server(tmp_path_factory.mktemp("limits") / "server.log", **TEST_LIMITS,
                           SCRIBE_SUBSCRIPTIONS__SECRET=SECRET, SCRIBE_SUBSCRIPTIONS__RECOVERY_INTERVAL_S="3600",
                           SCRIBE_FHIR__BASE_URL=NOWHERE + "/fhir", SCRIBE_FHIR__RETRIES="0")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Auth on, trusting an issuer that is never reached: no token, or a garbage one, can only be refused."""
    issuers = [{"issuer": NOWHERE + "/issuer", "audiences": ["http://fhir-scribe.test"]}]
    running = start_server(tmp_path_factory.mktemp("guarded") / "server.log", **TEST_LIMITS,
                           SCRIBE_AUTH__ENABLED="true", SCRIBE_AUTH__ISSUERS=json.dumps(issuers),
                           SCRIBE_FHIR__BASE_URL=NOWHERE + "/fhir")
    yield running
    stop_server(running)


# ---------------------------------------------------------------- raw HTTP with a streamed body

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    sent: int

    def json(self) -> dict:
        return json.loads(self.body)


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _read_reply(conn: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def send(url: str, method: str, path: str, headers: dict[str, str], body: Iterator[bytes], *,
         chunked: bool, timeout: float = 60.0) -> Reply:
    """Send the head, then the body piece by piece while watching for the response; stop sending once it comes."""
    started = time.monotonic()
    deadline = started + timeout
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    sent = 0
    with socket.create_connection(_address(url), timeout=10) as conn:
        conn.sendall((head + "\r\n").encode())
        for piece in body:
            if not piece:
                continue  # an empty chunk would end a chunked body
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: no response within {timeout} s")
            if select.select([conn], [], [], 0)[0]:
                break  # the server answered (or closed): stop sending
            try:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                conn.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        else:
            if chunked:
                try:
                    conn.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
        status, reply_headers, reply_body = _read_reply(conn, deadline)
    return Reply(status, reply_headers, reply_body, time.monotonic() - started, sent)


def filler(total: int, prefix: bytes = b"", suffix: bytes = b"", byte: bytes = b"a") -> Iterator[bytes]:
    """``total`` bytes: prefix, filler, suffix, in CHUNK pieces."""
    yield prefix
    remaining = total - len(prefix) - len(suffix)
    block = byte * CHUNK
    while remaining > 0:
        yield block[:min(remaining, CHUNK)]
        remaining -= CHUNK
    yield suffix


BOUNDARY = "limits-boundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def file_part_head(name: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.ogg\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()


def one_big_part(total: int) -> Iterator[bytes]:
    return filler(total, file_part_head("file"), f"\r\n--{BOUNDARY}--\r\n".encode(), b"\0")


def many_parts(total: int, part_bytes: int = 7 * MB) -> Iterator[bytes]:
    """Files of 7 MB (each under the 8 MiB per-file limit), each in a part of its own name, as long as it takes."""
    index = 0
    while total > 0:
        head = (b"" if index == 0 else b"\r\n") + file_part_head("file" if index == 0 else f"file{index}")
        size = min(part_bytes, total)
        yield from filler(size, head, b"", b"\0")
        total -= size
        index += 1
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def json_text(total: int) -> Iterator[bytes]:
    return filler(total, b'{"text": "', b'"}')


def json_draft(total: int) -> Iterator[bytes]:
    return filler(total, b'{"text": "', b'", "identifier": {"system": "x", "value": "12345678"}}')


# ---------------------------------------------------------------- process memory

def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def in_flight(server) -> float:
    """Requests the server is handling now (its gauge: health and metrics excluded)."""
    return metric(server.url, "fhir_scribe_http_requests_in_flight")


def _wait_idle(server, when: str) -> None:
    wait_for(lambda: in_flight(server) == 0, timeout=60, interval=0.05, what=f"the server idle ({when})")


def measured(server, run) -> tuple[Reply, int, int, int]:
    """(reply, RSS before, RSS after, peak RSS during) in KiB of the server process. The peak is the kernel's
    (VmHWM, reset first) where it can be reset, and RSS sampled every few milliseconds in any case: memory the
    process held for a moment and gave back counts."""
    pid = server.process.pid
    _wait_idle(server, "before")
    hwm_reset = _reset_peak(pid)
    before = _status_kib(pid, "VmRSS")
    sampled = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            sampled.append(_status_kib(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        reply = run()
        _wait_idle(server, "after the request")  # its handling over (the answer may come before), still sampled
    finally:
        done.set()
        sampler.join(timeout=5)
    after = _status_kib(pid, "VmRSS")
    peak = max(sampled + [after] + ([_status_kib(pid, "VmHWM")] if hwm_reset else []))
    return reply, before, after, peak


def assert_problem(reply: Reply, status: int, slug: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert body["type"] == f"urn:fhir-scribe:problem:{slug}" and body["status"] == status
    assert body["request_id"] == reply.headers["x-request-id"]


def assert_outcome(reply: Reply, status: int, slug: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers["content-type"] == "application/fhir+json"
    body = reply.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == slug


# (method, path, extra headers, body generator, chunked, check) per oversized-body case on the `limited` server.
LIMITED_CASES = {
    "upload_one_file_part_declared": ("POST", "/v1/audio/transcriptions", MULTIPART, one_big_part, False,
                                      lambda r: assert_problem(r, 413, "audio-too-large")),
    "upload_one_file_part_chunked": ("POST", "/v1/audio/transcriptions", MULTIPART, one_big_part, True,
                                     lambda r: assert_problem(r, 413, "audio-too-large")),
    # A second file part is refused when its headers arrive: 422 after the first 7 MB.
    "upload_many_file_parts_chunked": ("POST", "/v1/audio/transcriptions", MULTIPART, many_parts, True,
                                       lambda r: assert_problem(r, 422, "unprocessable")),
    "dictation_many_file_parts_chunked": ("POST", "/v1/dictations/draft", MULTIPART, many_parts, True,
                                          lambda r: assert_problem(r, 422, "unprocessable")),
    "sections_json_declared": ("POST", "/v1/sections", {"Content-Type": "application/json"}, json_text, False,
                               lambda r: assert_problem(r, 413, "body-too-large")),
    "sections_json_chunked": ("POST", "/v1/sections", {"Content-Type": "application/json"}, json_text, True,
                              lambda r: assert_problem(r, 413, "body-too-large")),
    "commit_json_chunked": ("POST", "/v1/dictations/commit", {"Content-Type": "application/json"}, json_draft, True,
                            lambda r: assert_problem(r, 413, "body-too-large")),
    "healthz_body_declared": ("GET", "/healthz", {}, filler, False,
                              lambda r: assert_problem(r, 413, "body-too-large")),
    "healthz_body_chunked": ("GET", "/healthz", {}, filler, True,
                             lambda r: assert_problem(r, 413, "body-too-large")),
    "notify_declared": ("POST", NOTIFY, {"Content-Type": "application/fhir+json", "X-Scribe-Secret": SECRET},
                        filler, False, lambda r: assert_outcome(r, 413, "body-too-large")),
    "notify_chunked": ("POST", NOTIFY, {"Content-Type": "application/fhir+json", "X-Scribe-Secret": SECRET},
                       filler, True, lambda r: assert_outcome(r, 413, "body-too-large")),
}


def _run_case(server, method, path, headers, make_body, chunked) -> tuple[Reply, int, int, int]:
    headers = {**headers} if chunked else {**headers, "Content-Length": str(BIG)}
    return measured(server, lambda: send(server.url, method, path, headers, make_body(BIG), chunked=chunked))


def _report(name: str, reply: Reply, before: int, after: int, peak: int) -> None:
    print(f"\n{name}: {reply.status} in {reply.seconds:.2f} s after {reply.sent / MB:.1f} MB sent; server RSS "
          f"{before / 1024:.0f} -> {after / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")


def assert_memory_bounded(before: int, after: int, peak: int) -> None:
    assert after - before < RSS_GROWTH_LIMIT_KIB, f"server RSS grew by {(after - before) / 1024:.0f} MiB"
    assert peak - before < RSS_GROWTH_LIMIT_KIB, f"server peak RSS grew by {(peak - before) / 1024:.0f} MiB"


@pytest.mark.parametrize("name", LIMITED_CASES)
def test_oversized_body_is_refused_as_it_arrives(limited, name):
    method, path, headers, make_body, chunked, check = LIMITED_CASES[name]
    reply, before, after, peak = _run_case(limited, method, path, headers, make_body, chunked)
    _report(name, reply, before, after, peak)
    check(reply)
    assert reply.seconds < 30, "the refusal was not prompt"
    assert_memory_bounded(before, after, peak)
    assert httpx.get(limited.url + "/healthz", timeout=10).status_code == 200


GUARDED_CASES = {
    "commit_json_no_token_chunked": ({}, True, 401, "invalid-token"),
    "commit_json_garbage_token_chunked": ({"Authorization": "Bearer not.a.token"}, True, 401, "invalid-token"),
    "commit_json_no_token_declared": ({}, False, 413, "body-too-large"),  # refused from the header, before all
}


@pytest.mark.parametrize("name", GUARDED_CASES)
def test_token_is_checked_before_a_json_body_is_read(guarded, name):
    extra, chunked, status, slug = GUARDED_CASES[name]
    headers = {"Content-Type": "application/json", **extra}
    reply, before, after, peak = _run_case(guarded, "POST", "/v1/dictations/commit", headers, json_draft, chunked)
    _report(name, reply, before, after, peak)
    assert_problem(reply, status, slug)
    assert reply.seconds < 30, "the refusal was not prompt"
    assert_memory_bounded(before, after, peak)
    if status == 401:
        assert reply.sent < 20 * MB, "the body was read before the token was checked"


# ---------------------------------------------------------------- multipart: one file part, named file

def _form(*parts: tuple[str, bytes, bool]) -> bytes:
    out = b""
    for name, data, is_file in parts:
        disposition = f'form-data; name="{name}"' + ('; filename="a.ogg"' if is_file else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("parts, fragment", [
    ((("file", b"x", True), ("file", b"y", True)), "more than one file part"),
    ((("file", b"x", True), ("other", b"y", True)), "more than one file part"),
    ((("audio", b"x", True),), "no 'file' part"),
])
def test_only_one_file_part_named_file(limited, parts, fragment):
    response = httpx.post(limited.url + "/v1/audio/transcriptions", content=_form(*parts), headers=MULTIPART,
                          timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:fhir-scribe:problem:unprocessable" and fragment in response.json()["detail"]


def test_form_fields_are_capped_together(limited, dictation):
    fields = [(f"f{i}", b"v" * 30_000, False) for i in range(3)]  # each under 64 KiB, 90 kB together
    response = httpx.post(limited.url + "/v1/audio/transcriptions", headers=MULTIPART, timeout=30,
                          content=_form(("file", dictation.audio, True), *fields))
    assert response.status_code == 400 and "together" in response.json()["detail"], response.text


# ---------------------------------------------------------------- JSON read by the route

def test_json_routes_keep_the_documented_request_body(limited):
    spec = httpx.get(limited.url + "/openapi.json", timeout=10).json()
    commit = spec["paths"]["/v1/dictations/commit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"identifier", "context", "text"} <= set(commit["required"])
    assert commit["properties"]["context"]["properties"]["patient"]  # nested models inlined
    sections = spec["paths"]["/v1/sections"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert sections["required"] == ["text"]
    assert "$ref" not in json.dumps(commit) + json.dumps(sections)


@pytest.mark.parametrize("content, headers", [
    (b"\xff\xfe not UTF-8", {"Content-Type": "application/json"}),
    (b'{"text": "unterminated', {"Content-Type": "application/json"}),
    (b'{"text": "half a pair \\ud800"}', {"Content-Type": "application/json"}),  # no text: cannot be encoded back
    (b'{"text": ' + b"1" * 5000 + b"}", {"Content-Type": "application/json"}),  # over Python's int digit limit
    (b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}),  # nested too deeply
    (b"", {"Content-Type": "application/json"}),
    (b'{"text": "plain"}', {"Content-Type": "text/plain"}),
])
def test_bad_json_is_an_invalid_request(limited, content, headers):
    response = httpx.post(limited.url + "/v1/sections", content=content, headers=headers, timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:fhir-scribe:problem:invalid-request"


# ---------------------------------------------------------------- slow uploads

@dataclass
class Trickle:
    status: int | None = None
    slug: str | None = None
    seconds: float | None = None
    error: str | None = None


def trickle(url: str, result: Trickle, *, silent: bool = False, every_s: float = 2.0, limit_s: float = 90.0) -> None:
    """Declare 1 MB, then send one byte every `every_s` (or nothing at all) until the server answers."""
    started = time.monotonic()
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {MB}\r\n\r\n").encode()
    body = file_part_head("file") + b"\0" * MB
    try:
        with socket.create_connection(_address(url), timeout=10) as conn:
            conn.sendall(head)
            position = 0
            while time.monotonic() - started < limit_s:
                if not silent:
                    conn.sendall(body[position:position + 1])
                    position += 1
                if select.select([conn], [], [], every_s)[0]:
                    status, _, reply = _read_reply(conn, started + limit_s)
                    result.status, result.seconds = status, time.monotonic() - started
                    result.slug = json.loads(reply).get("type", "").rsplit(":", 1)[-1]
                    return
            result.error = f"no answer in {limit_s} s"
    except OSError as failure:
        result.error = f"{type(failure).__name__}: {failure}"


def test_tricklers_do_not_hold_transcription_slots(limited, dictation):
    # Today's defaults: 2 workers + 8 queued = 10 transcription slots, 16 upload slots, 10 s grace at 16 KiB/s.
    results = [Trickle() for _ in range(TRICKLERS)]
    threads = [threading.Thread(target=trickle, args=(limited.url, r), kwargs={"silent": i == 0}, daemon=True)
               for i, r in enumerate(results)]
    for thread in threads:
        thread.start()
    wait_for(lambda: in_flight(limited) >= TRICKLERS, timeout=60, what=f"all {TRICKLERS} tricklers in, "
             "their uploads being received")
    started = time.monotonic()
    response = httpx.post(limited.url + "/v1/audio/transcriptions", files={"file": ("a.ogg", dictation.audio)},
                          timeout=30)
    served_s = time.monotonic() - started
    print(f"\nnormal request beside {TRICKLERS} tricklers: {response.status_code} in {served_s:.1f} s")
    assert response.status_code == 200, response.text
    assert "chest pain" in response.json()["text"].lower()
    for thread in threads:
        thread.join(timeout=100)
    print("tricklers: " + ", ".join(f"{r.status} after {r.seconds:.1f} s" if r.status else str(r.error)
                                    for r in results))
    assert all(r.status == 408 and r.slug == "upload-too-slow" for r in results), results
    assert httpx.get(limited.url + "/healthz", timeout=10).status_code == 200


def test_full_upload_gate_answers_503_with_retry_after(tmp_path, dictation):
    server = start_server(tmp_path / "server.log", **TEST_LIMITS, SCRIBE_AUDIO__MAX_CONCURRENT_UPLOADS="1",
                          SCRIBE_AUDIO__UPLOAD_GRACE_S="3", SCRIBE_TRANSCRIPTION__RETRY_AFTER_S="7")
    try:
        url = server.url + "/v1/audio/transcriptions"
        silent = Trickle()
        thread = threading.Thread(target=trickle, args=(server.url, silent), kwargs={"silent": True}, daemon=True)
        thread.start()
        wait_for(lambda: in_flight(server) >= 1, timeout=60, what="the silent upload in the one upload slot")
        busy = httpx.post(url, files={"file": ("a.ogg", dictation.audio)}, timeout=30)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "7", busy.text
        assert busy.json()["type"] == "urn:fhir-scribe:problem:overloaded"
        thread.join(timeout=30)
        assert silent.status == 408 and silent.slug == "upload-too-slow", silent
        assert httpx.post(url, files={"file": ("a.ogg", dictation.audio)}, timeout=30).status_code == 200
    finally:
        stop_server(server)
