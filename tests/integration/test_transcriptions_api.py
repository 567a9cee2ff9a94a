"""The OpenAI-compatible endpoint over real HTTP, driven by the real ``openai`` SDK where a client would use it."""


import httpx
import openai
import pytest

from tests.support.wer import wer

TRANSCRIPTIONS = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-used-yet", max_retries=0)


def test_sdk_json(client, dictation):
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", dictation.audio))
    assert wer(dictation.reference, result.text) < 0.2


def test_sdk_text(client, dictation):
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", dictation.audio),
                                                response_format="text")
    assert isinstance(result, str) and "chest pain" in result.lower()


def test_sdk_verbose_json_with_words_and_segments(client, dictation):
    result = client.audio.transcriptions.create(
        model="tiny.en", file=("a.ogg", dictation.audio), response_format="verbose_json",
        timestamp_granularities=["word", "segment"], language="en", prompt="Lisinopril, atorvastatin.")
    assert result.language == "en" and result.duration == pytest.approx(39.9, abs=0.3)
    assert result.segments and result.words
    first = result.segments[0]
    assert first.id == 0 and first.start == 0.0 and first.end > 0 and first.tokens
    assert -5 < first.avg_logprob <= 0 and 0 <= first.no_speech_prob <= 1
    assert result.words[0].end >= result.words[0].start


@pytest.mark.parametrize("fmt, marker", [("srt", "00:00:00,000 --> "), ("vtt", "WEBVTT")])
def test_sdk_subtitles(client, dictation, fmt, marker):
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", dictation.audio),
                                                response_format=fmt)
    assert marker in result and "complaint" in result.lower()


def test_sdk_stream_yields_segments_as_decoded(client, dictation):
    events = list(client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", dictation.audio),
                                                     stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 3 and len(done) == 1 and events[-1].type == "transcript.text.done"
    assert "".join(d.delta for d in deltas).strip() == done[0].text
    assert [d.segment_id for d in deltas] == [str(i) for i in range(len(deltas))]


def test_models_endpoint(client):
    assert [m.id for m in client.models.list()] == ["tiny.en"]


@pytest.mark.parametrize("ext", ["wav", "mp3", "m4a", "aac", "flac", "ogg", "opus.ogg", "webm"])
def test_every_format_over_http(server, encoded, dictation, ext):
    # Deliberately misleading file name and MIME type: the service must go by the bytes.
    response = httpx.post(server.url + TRANSCRIPTIONS, files={"file": ("recording.txt", encoded[ext], "text/plain")},
                          timeout=60)
    assert response.status_code == 200, response.text
    assert wer(dictation.reference, response.json()["text"]) < 0.2


def test_silence_returns_empty_text(server):
    from tests.conftest import SPEECH

    response = httpx.post(server.url + TRANSCRIPTIONS,
                          files={"file": ("s.ogg", (SPEECH / "silence.ogg").read_bytes())},
                          data={"response_format": "verbose_json"}, timeout=60)
    assert response.status_code == 200
    assert response.json()["text"] == "" and response.json()["segments"] == []


def test_request_id_is_echoed_and_generated(server):
    response = httpx.get(server.url + "/healthz", headers={"X-Request-ID": "trace-12345678"})
    assert response.headers["x-request-id"] == "trace-12345678"
    generated = httpx.get(server.url + "/healthz", headers={"X-Request-ID": "bad id; drop"}).headers["x-request-id"]
    assert len(generated) == 32 and generated != "bad id"


def test_readyz_reports_the_loaded_model(server):
    body = httpx.get(server.url + "/readyz").json()
    assert body["status"] == "ready" and body["model"] == "tiny.en" and body["compute_type"] == "int8"


def test_openapi_documents_the_upload(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    body = spec["paths"][TRANSCRIPTIONS]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "file" in body["required"] and "timestamp_granularities[]" in body["properties"]
