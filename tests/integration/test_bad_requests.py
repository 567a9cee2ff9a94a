"""Every bad input gets the right status and a precise problem+json, and the service keeps answering."""

import json
import socket

import httpx
import pytest

from tests.support import bad_audio

TRANSCRIPTIONS = "/v1/audio/transcriptions"

# (status, problem type suffix, fragment of detail). Limits of the test server: 8 MiB, 2 min, 0.5 s.
AUDIO_CASES = {
    "zero_bytes": (422, "invalid-audio", "empty (0 bytes)"),
    "random_bytes": (415, "unsupported-audio", "not a recognised audio format"),
    "text_renamed_wav": (415, "unsupported-audio", "not a recognised audio format"),
    "json_document": (415, "unsupported-audio", "not a recognised audio format"),
    "pdf_document": (415, "unsupported-audio", "not a recognised audio format"),
    "png_image": (415, "unsupported-audio", "not a supported audio format"),
    "video_only_mp4": (415, "unsupported-audio", "contains no audio stream"),
    "unsupported_codec_wav": (415, "unsupported-audio", "codec 'adpcm_ms' is not supported"),
    "truncated_mp3": (422, "invalid-audio", "truncated"),
    "truncated_webm": (422, "invalid-audio", "truncated"),
    "truncated_m4a": (422, "invalid-audio", "corrupt or truncated"),
    "truncated_wav": (422, "invalid-audio", "truncated"),
    "truncated_flac": (422, "invalid-audio", "corrupt or truncated"),
    "header_claims_hours_wav": (422, "invalid-audio", "header declares 180.0 min"),
    "too_long_by_header": (422, "invalid-audio", "the limit is 2.0 min"),
    "too_long_while_decoding": (422, "invalid-audio", "while decoding"),
    "clip_0_1_s": (422, "invalid-audio", "the minimum is 0.5 s"),
    "twice_the_size_limit": (413, "audio-too-large", "limit is 8.0 MiB"),
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory, dictation, encoded):
    return bad_audio.make(tmp_path_factory.mktemp("bad"), dictation.path, encoded)


def assert_problem(response: httpx.Response, status: int, slug: str, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:fhir-scribe:problem:{slug}" and body["status"] == status and body["title"]
    assert fragment in body["detail"], body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("name", AUDIO_CASES)
def test_bad_audio(server, bad, name):
    response = httpx.post(server.url + TRANSCRIPTIONS, files={"file": ("x.wav", bad[name], "audio/wav")}, timeout=60)
    assert_problem(response, *AUDIO_CASES[name])
    assert httpx.get(server.url + "/healthz").status_code == 200


REQUEST_CASES = {
    "json_body_not_multipart": (dict(json={"file": "abc"}), 415, "unsupported-media-type", "multipart/form-data"),
    "form_without_file": (dict(data={"model": "whisper-1"}, files={"other": ("a", b"x")}), 422, "unprocessable",
                          "no 'file' part"),
    "unknown_response_format": (dict(data={"response_format": "docx"}), 422, "unprocessable", "response_format"),
    "temperature_out_of_range": (dict(data={"temperature": "5"}), 422, "unprocessable", "temperature"),
    "temperature_not_a_number": (dict(data={"temperature": "hot"}), 422, "unprocessable", "temperature"),
    "unknown_model": (dict(data={"model": "large-v9"}), 400, "bad-request", "'large-v9' is not served here"),
    "language_the_model_lacks": (dict(data={"language": "fr"}), 400, "bad-request", "English-only"),
    "words_without_verbose_json": (dict(data={"timestamp_granularities[]": "word"}), 400, "bad-request",
                                   "needs response_format=verbose_json"),
    "bad_granularity": (dict(data={"timestamp_granularities[]": "sentence"}), 422, "unprocessable",
                        "timestamp_granularities"),
}


@pytest.mark.parametrize("name", REQUEST_CASES)
def test_bad_request_fields(server, dictation, name):
    kwargs, status, slug, fragment = REQUEST_CASES[name]
    if "files" not in kwargs and "json" not in kwargs:
        kwargs = {**kwargs, "files": {"file": ("a.ogg", dictation.audio)}}
    response = httpx.post(server.url + TRANSCRIPTIONS, timeout=60, **kwargs)
    assert_problem(response, status, slug, fragment)


def test_malformed_multipart(server):
    body = b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc"  # never closed
    response = httpx.post(server.url + TRANSCRIPTIONS, content=body,
                          headers={"Content-Type": "multipart/form-data; boundary=ABC"})
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"


def test_declared_oversize_is_refused_before_reading(server):
    # Content-Length says 1 GiB and only a few bytes follow: the answer must come from the header alone.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST " + TRANSCRIPTIONS.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1073741824\r\n\r\n--B\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"application/problem+json" in head
    assert json.loads(body)["detail"].startswith("the request body is 1024.0 MiB")


def test_unknown_route_and_method_are_problems(server):
    assert_problem(httpx.get(server.url + "/v2/nothing"), 404, "http-404", "Not Found")
    assert_problem(httpx.get(server.url + TRANSCRIPTIONS), 405, "http-405", "Method Not Allowed")


def test_still_transcribes_after_all_that(server, dictation):
    response = httpx.post(server.url + TRANSCRIPTIONS, files={"file": ("a.ogg", dictation.audio)}, timeout=60)
    assert response.status_code == 200 and "chest pain" in response.json()["text"].lower()
    assert server.process.poll() is None
