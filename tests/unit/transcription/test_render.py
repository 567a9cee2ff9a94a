import json

from service.transcription.render import render
from service.transcription.transcript import Segment, Transcript, Word


def _transcript() -> Transcript:
    words = [Word(word=" Chief", start=0.0, end=0.4, probability=0.9),
             Word(word=" complaint.", start=0.4, end=1.0, probability=0.8)]
    segments = [
        Segment(id=0, seek=0, start=0.0, end=1.0, text=" Chief complaint.", tokens=[1, 2], temperature=0.0,
                avg_logprob=-0.2, compression_ratio=1.1, no_speech_prob=0.01, words=words),
        Segment(id=1, seek=0, start=3661.5, end=3662.25, text=" Cough.", tokens=[3], temperature=0.2,
                avg_logprob=-0.3, compression_ratio=1.0, no_speech_prob=0.02),
    ]
    return Transcript(text="Chief complaint. Cough.", language="en", language_probability=1.0, duration_s=3663.0,
                      segments=segments, model="tiny.en", model_revision="test")


def test_srt_numbers_cues_and_uses_comma_millis():
    assert render(_transcript(), "srt") == (
        "1\n00:00:00,000 --> 00:00:01,000\nChief complaint.\n\n2\n01:01:01,500 --> 01:01:02,250\nCough.\n")


def test_vtt_has_header_and_dot_millis():
    assert render(_transcript(), "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nChief complaint.\n")
    assert "01:01:01.500 --> 01:01:02.250\nCough." in render(_transcript(), "vtt")


def test_json_and_text():
    assert json.loads(render(_transcript(), "json")) == {"text": "Chief complaint. Cough."}
    assert render(_transcript(), "text") == "Chief complaint. Cough.\n"


def test_verbose_json_has_openai_shape():
    body = json.loads(render(_transcript(), "verbose_json", words=True))
    assert {"task", "language", "duration", "text", "segments", "words"} <= set(body)
    assert set(body["segments"][0]) == {"id", "seek", "start", "end", "text", "tokens", "temperature",
                                        "avg_logprob", "compression_ratio", "no_speech_prob"}
    assert body["words"] == [{"word": " Chief", "start": 0.0, "end": 0.4},
                             {"word": " complaint.", "start": 0.4, "end": 1.0}]
    assert "words" not in json.loads(render(_transcript(), "verbose_json"))
