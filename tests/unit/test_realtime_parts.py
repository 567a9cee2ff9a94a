"""The live path's parts without a socket: LocalAgreement-2, the turn detector on real speech and silence, PCM16
resampling, and reading both session shapes of the OpenAI Realtime protocol."""

import numpy as np
import pytest
from faster_whisper import decode_audio

from service.realtime.listening import PcmInput, ServerVad, Speech, SpeechStarted, SpeechStopped, Turns
from service.realtime.protocol import ProtocolError, SessionConfig, parse_event, session_object, updated
from service.transcription.streaming import STALL_S, LocalAgreement, TimedWord
from tests.conftest import REPO

SPEECH = REPO / "tests/fixtures/speech/dictation_cough.ogg"


def words(*spec: tuple[str, float]) -> list[TimedWord]:
    """(text, end) pairs; each word starts 0.3 s before its end."""
    return [TimedWord(f" {text}", end - 0.3, end, 0.9) for text, end in spec]


def test_a_word_is_confirmed_when_two_hypotheses_in_a_row_agree_on_it():
    agreement = LocalAgreement()
    assert agreement.update(words(("The", 0.4), ("patient", 0.9)), decoded_to=1.0) == []
    confirmed = agreement.update(words(("The", 0.4), ("patient", 0.9), ("denies", 1.4)), decoded_to=1.5)
    assert [w.text for w in confirmed] == [" The", " patient"]
    assert [w.text for w in agreement.tentative] == [" denies"]
    # Case and punctuation do not count as disagreement; the confirmed words are not sent again.
    confirmed = agreement.update(words(("The", 0.4), ("patient", 0.9), ("Denies.", 1.4), ("fever", 1.8)),
                                 decoded_to=1.9)
    assert [w.text for w in confirmed] == [" Denies."]


def test_a_disagreement_holds_the_words_after_it_until_they_are_old():
    agreement = LocalAgreement()
    agreement.update(words(("metoprolol", 1.0), ("25", 1.4), ("milligrams", 1.8)), decoded_to=1.85)
    held = agreement.update(words(("metoprolol", 1.0), ("25", 1.4), ("mg", 1.8)), decoded_to=2.2)
    assert [w.text for w in held] == [" metoprolol", " 25"]  # the flip holds "mg"
    # Still flipping, but it ended STALL_S before the decoded audio's end: confirmed from the newest hypothesis.
    late = agreement.update(words(("metoprolol", 1.0), ("25", 1.4), ("milligrams", 1.8), ("daily", 2.4)),
                            decoded_to=1.8 + STALL_S + 0.1)
    assert [w.text for w in late] == [" milligrams"]


def test_a_hypothesis_repeating_the_confirmed_words_is_not_sent_twice():
    agreement = LocalAgreement()
    agreement.update(words(("no", 0.5), ("known", 0.9)), decoded_to=1.0)
    agreement.update(words(("no", 0.5), ("known", 0.9), ("allergies", 1.5)), decoded_to=1.6)
    # After the window was cut, a decode starts again with the last confirmed words, at slightly other times.
    again = [TimedWord(" known", 0.85, 0.95, 0.9), TimedWord(" allergies", 1.0, 1.5, 0.9)]
    assert [w.text for w in agreement.update(again, decoded_to=2.0)] == [" allergies"]  # "known" is not resent
    assert agreement.flush(again + words(("today", 2.0))) == words(("today", 2.0))


def _pcm(rate: int) -> bytes:
    samples = decode_audio(str(SPEECH), sampling_rate=rate)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("rate", [24000, 16000])
def test_pcm16_frames_become_16khz_samples_without_loss_at_frame_edges(rate):
    pcm = _pcm(rate)
    reference = decode_audio(str(SPEECH), sampling_rate=16000)
    source = PcmInput(rate)
    step = 4801  # odd byte counts: a sample split across frames is joined, not dropped
    out = np.concatenate([source.feed(pcm[i:i + step]) for i in range(0, len(pcm), step)])
    assert abs(len(out) - len(reference)) < 16000 * 0.02
    n = min(len(out), len(reference)) - 400
    correlation = np.corrcoef(out[200:n], reference[200:n])[0, 1]
    assert correlation > 0.95


def test_turns_find_speech_and_its_end_in_silence():
    samples = decode_audio(str(SPEECH), sampling_rate=16000)[: 16000 * 6]
    silence = np.zeros(16000 * 2, np.float32)
    turns = Turns(ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500))
    heard = []
    stream = np.concatenate([silence, samples, silence])
    for i in range(0, len(stream), 1600):
        heard += turns.feed(stream[i:i + 1600])
    starts = [h for h in heard if isinstance(h, SpeechStarted)]
    stops = [h for h in heard if isinstance(h, SpeechStopped)]
    assert len(starts) == len(stops) >= 1
    assert 1500 <= starts[0].at_ms <= 2300  # speech begins at 2 s, less the prefix padding
    assert 7500 <= stops[-1].at_ms <= 8600  # and ends near 8 s
    speech = sum(len(h.samples) for h in heard if isinstance(h, Speech))
    assert speech < len(stream) - 16000  # the silence between turns is not kept


def test_words_after_the_last_speech_heard_stay_tentative():
    agreement = LocalAgreement()
    hypothesis = words(("no", 0.5), ("allergies", 1.2), ("Thank", 2.0), ("you.", 2.3))
    confirmed = agreement.update(hypothesis, decoded_to=2.4, heard_until=1.3)
    confirmed += agreement.update(hypothesis, decoded_to=2.5, heard_until=1.3)
    assert [w.text for w in confirmed] == [" no", " allergies"]  # agreed on twice, "Thank you." is not heard


def test_without_turn_detection_all_audio_is_speech():
    turns = Turns(None)
    assert [type(h) for h in turns.feed(np.zeros(1600, np.float32))] == [Speech]


def test_both_session_shapes_are_read():
    ga = updated(SessionConfig(), {"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}, "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": None, "noise_reduction": {"type": "near_field"}}}}})
    assert (ga.shape, ga.rate, ga.turn_detection, ga.model) == ("ga", 16000, None, "whisper-1")
    assert session_object(ga, "sess_1", "tiny.en")["audio"]["input"]["format"]["rate"] == 16000
    beta = updated(SessionConfig(), {"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16", "input_audio_transcription": {"model": "gpt-4o-transcribe", "prompt": "cardiology"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}, "include": ["x"]}})
    assert (beta.shape, beta.rate, beta.turn_detection.silence_duration_ms, beta.prompt) == \
        ("beta", 24000, 800, "cardiology")
    assert session_object(beta, "sess_1", "tiny.en")["input_audio_format"] == "pcm16"
    # Fields left out stay as they were.
    assert updated(ga, {"type": "session.update", "session": {"type": "transcription"}}).rate == 16000


@pytest.mark.parametrize("session, code", [
    ({"type": "realtime"}, "unsupported_session_type"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "unsupported_audio_format"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}},
     "unsupported_audio_format"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
     "unsupported_turn_detection"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 3}}}}, "invalid_value"),
])
def test_what_would_be_silently_wrong_is_an_error(session, code):
    with pytest.raises(ProtocolError) as refused:
        updated(SessionConfig(), {"type": "session.update", "session": session})
    assert refused.value.code == code


@pytest.mark.parametrize("raw, code", [("{", "invalid_json"), ("[1]", "invalid_event"), ('{"type": 3}', "invalid_event")])
def test_a_message_that_is_no_event_is_named(raw, code):
    with pytest.raises(ProtocolError) as refused:
        parse_event(raw)
    assert refused.value.code == code


def _transcript(spec: list[tuple[str, float, float]], compression_ratio: float = 1.5) -> "Transcript":
    from service.transcription.transcript import Segment, Transcript, Word

    words_ = [Word(word=f" {t}", start=a, end=b, probability=0.9) for t, a, b in spec]
    segment = Segment(id=0, seek=0, start=0, end=spec[-1][2], text="".join(w.word for w in words_), tokens=[],
                      temperature=0, avg_logprob=-0.2, compression_ratio=compression_ratio, no_speech_prob=0.01,
                      words=words_)
    return Transcript(text=segment.text.strip(), language="en", language_probability=1, duration_s=spec[-1][2],
                      segments=[segment], model="tiny.en", model_revision="test")


def _utterance():
    from service.transcription.streaming import LiveUtterance
    from service.transcription.transcript import TranscribeOptions

    utterance = LiveUtterance(TranscribeOptions(), start_s=10.0, window_s=15)
    utterance.append(np.zeros(16000 * 3, np.float32))
    return utterance


def test_a_looping_hypothesis_is_no_evidence():
    utterance = _utterance()
    loop = _transcript([("very", 0.1 * i, 0.1 * i + 0.1) for i in range(20)], compression_ratio=6.0)
    assert utterance.accept(utterance.snapshot(), loop) == [] and utterance.accept(utterance.snapshot(), loop) == []
    assert utterance.tentative() == ""


def test_words_after_the_heard_end_of_speech_are_not_the_clinicians():
    utterance = _utterance()
    utterance.speech_end_s = 12.0  # silence from 2 s into the utterance
    final = _transcript([("no", 0.2, 0.5), ("allergies", 0.6, 1.4), ("Thank", 2.3, 2.5), ("you.", 2.5, 2.8)])
    tail, text = utterance.finish(utterance.final_window(), final)
    assert [w.text for w in tail] == [" no", " allergies"] and text == "no allergies"
