"""Speech the decoder gave no words for is found and flagged (issue 8's clinical-safety post-checks, extended):
no false alarm on any speech fixture, and when words are missing from a real transcript (as when Whisper skipped
"Allergies. No known drug allergies." at a 30 s window edge) the seconds are found and the flag sits after the
last words heard."""

from service.audio import decode
from service.review.flags import heard_words
from service.review.omission import omission_flags
from service.transcription.coverage import unheard
from tests.support.charts import charted_dictations


def test_no_unheard_speech_is_reported_on_any_fixture(transcriber, settings):
    for dictation in charted_dictations():  # all eight speech fixtures
        audio = decode(dictation.audio, settings.audio)
        transcript = transcriber.transcribe(audio, transcriber.default_options())
        assert unheard(audio.samples, transcript) == [], dictation.name


def test_missing_words_are_found_and_flagged_where_they_were(transcriber, dictation, settings):
    audio = decode(dictation.audio, settings.audio)
    transcript = transcriber.transcribe(audio, transcriber.default_options())
    words = [w for s in transcript.segments for w in s.words]
    allergies = [w for w in words if "allerg" in w.word.lower()]
    gone_from, gone_to = allergies[0].start, allergies[-1].end  # "Allergies. No known drug allergies."
    kept = [w for w in words if not gone_from - 0.05 <= w.start <= gone_to]
    segments = [s.model_copy(update={"words": [w for w in s.words if w in kept]}) for s in transcript.segments]
    text = "".join(w.word for w in kept).strip()  # what the note would say without the sentence
    missing = transcript.model_copy(update={"segments": segments, "text": text})
    found = unheard(audio.samples, missing)
    assert len(found) == 1 and found[0].start <= gone_from + 0.5 and found[0].end >= gone_to - 0.5, found
    [flag] = omission_flags(heard_words(missing, text), found, text)
    assert flag.kind == "possible-omission" and text[flag.start:flag.end] == flag.text
    assert (flag.audio_start, flag.audio_end) == (found[0].start, found[0].end)  # the app plays the gap itself
    assert "at night" in flag.text, flag
    assert "listen to the recording" in flag.message
