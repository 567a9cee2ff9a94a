"""The review stage's own parts: the note's words placed where they were heard, low-confidence phrases, the audio
span every flag carries, and the whole stage over a draft with dictation commands applied."""

from service.config import ReviewSettings
from service.review import review
from service.review.confidence import low_confidence_flags
from service.review.flags import ReviewFlag, heard_words, with_audio
from service.sections.note import Section, StructuredNote
from service.transcription.transcript import Segment, TimeSpan, Transcript, Word
from service.vocabulary.models import Term

SETTINGS = ReviewSettings(low_confidence_below=0.5, low_confidence_rare_below=0.65, low_confidence_gap=1)


def transcript(*segments: list[tuple], no_speech: float = 0.0, compression: float = 1.5) -> Transcript:
    """Segments of (word, probability[, subword pieces]); each word lasts 0.5 s."""
    made, clock = [], 0.0
    for i, said in enumerate(segments):
        words = []
        for text, probability, *pieces in said:
            words.append(Word(word=" " + text, start=clock, end=clock + 0.5, probability=probability,
                              pieces=pieces[0] if pieces else 1))
            clock += 0.5
        made.append(Segment(id=i, seek=0, start=words[0].start, end=words[-1].end, text="".join(w.word for w in words),
                            tokens=[], temperature=0.0, avg_logprob=-1.5 if no_speech else -0.3,
                            compression_ratio=compression, no_speech_prob=no_speech, words=words))
    return Transcript(text="".join(s.text for s in made).strip(), language="en", language_probability=1.0,
                      duration_s=clock, segments=made, model="tiny.en", model_revision="test")


def plain(text: str) -> StructuredNote:
    return StructuredNote(text=text, sections=[Section(category=None, code=None, display=None, title=None, text=text,
                                                       start=0, end=len(text), body_start=0)], findings=[])


def test_words_are_placed_in_the_note_even_where_commands_changed_it():
    heard = transcript([("Cough", 0.9), ("for", 0.9), ("three", 0.9), ("days", 0.9), ("period", 0.9),
                        ("New", 0.9), ("paragraph", 0.9), ("No", 0.9), ("fever.", 0.2)])
    note = "Cough for three days.\n\nNo fever."  # what the dictation commands make of it
    words = heard_words(heard, note)
    assert [note[w.start:w.end] for w in words] == ["Cough", "for", "three", "No", "fever."]
    assert [(w.audio_start, w.audio_end) for w in words][-1] == (4.0, 4.5)


def test_unsure_words_become_phrases_with_their_seconds():
    heard = transcript([("Start", 0.95), ("phyros", 0.44), ("mic", 0.42), ("14", 0.53), ("milligrams", 0.96),
                        ("daily", 0.99), ("and", 0.99), ("recheck", 0.75), ("potassium", 0.17), ("soon", 0.99)])
    flags = low_confidence_flags(heard_words(heard, heard.text), heard.text, SETTINGS)
    # 14 (0.53) is above the threshold but between two unsure words only one word apart: one phrase
    assert [f.text for f in flags] == ["phyros mic", "potassium"]
    assert all(heard.text[f.start:f.end] == f.text for f in flags)
    assert "44%" not in flags[0].message and "42%" in flags[0].message  # the lowest, as the clinician's cue
    placed = [with_audio(f, heard_words(heard, heard.text)) for f in flags]
    assert [(f.audio_start, f.audio_end) for f in placed] == [(0.5, 1.5), (4.0, 4.5)]


def test_gap_joins_words_a_word_apart():
    heard = transcript([("a", 0.1), ("b", 0.9), ("c", 0.1), ("d", 0.9), ("e", 0.9), ("f", 0.1)])
    assert [f.text for f in low_confidence_flags(heard_words(heard, heard.text), heard.text, SETTINGS)] == ["a b c",
                                                                                                        "f"]
    apart = SETTINGS.model_copy(update={"low_confidence_gap": 0})
    assert [f.text for f in low_confidence_flags(heard_words(heard, heard.text), heard.text, apart)] == ["a", "c", "f"]
    off = SETTINGS.model_copy(update={"low_confidence_below": 0})
    assert low_confidence_flags(heard_words(heard, heard.text), heard.text, off) == []


def test_chart_terms_and_recognised_headings_are_not_judged_by_probability():
    heard = transcript([("Medications.", 0.05), ("Apixaban", 0.06), ("5", 0.9), ("milligrams.", 0.9),
                        ("Plan.", 0.3), ("Phyros", 0.2), ("mic.", 0.3)])
    note = StructuredNote(text=heard.text, findings=[], sections=[
        Section(category="medications", code="10160-0", display="Medications", title="medications",
                text="Apixaban 5 milligrams.", start=0, end=35, body_start=13),
        Section(category="plan", code="18776-5", display="Plan of care note", title="plan", text="Phyros mic.",
                start=35, end=len(heard.text), body_start=41)])
    flags = review(heard, note, [], [Term("apixaban", "MedicationRequest")], SETTINGS)
    assert [(f.kind, f.text) for f in flags] == [("low-confidence", "Phyros mic.")]


def test_a_segment_whisper_would_call_made_up_is_flagged_whole():
    heard = transcript([("Thank", 0.9), ("you", 0.95), ("for", 0.9), ("watching.", 0.9)], no_speech=0.8)
    [flag] = low_confidence_flags(heard_words(heard, heard.text), heard.text, SETTINGS)
    assert flag.text == heard.text and "made these words up" in flag.message
    looping = transcript([("very", 0.9), ("very", 0.9), ("very", 0.9)], compression=3.1)
    [flag] = low_confidence_flags(heard_words(looping, looping.text), looping.text, SETTINGS)
    assert flag.text == "very very very"


def test_every_flag_carries_the_seconds_it_points_at():
    heard = transcript([("Lisinopril", 0.9), ("10", 0.9), ("mg", 0.9), ("daily.", 0.9)], [("Allergies.", 0.9)])
    flags = review(heard, plain(heard.text), [TimeSpan(start=1.6, end=4.0)], [], SETTINGS)
    by_kind = {f.kind: f for f in flags}
    assert (by_kind["unit-symbol"].audio_start, by_kind["unit-symbol"].audio_end) == (0.5, 1.5)  # "10 mg"
    omission = by_kind["possible-omission"]
    assert (omission.audio_start, omission.audio_end) == (1.6, 4.0) and omission.text == "10 mg daily."
    unplaced = ReviewFlag(kind="unit-symbol", start=0, end=3, text="Lis", message="m")
    assert with_audio(unplaced, []) == unplaced


def test_a_word_spelled_from_several_pieces_needs_more_confidence():
    heard = transcript([("who", 0.9), ("reports", 0.6, 1), ("serracing", 0.61, 3), ("heart", 0.9), ("for", 0.9),
                        ("two", 0.9), ("weeks", 0.9), ("12.5", 0.6, 3), ("milligrams", 0.9, 2)])
    flags = low_confidence_flags(heard_words(heard, heard.text), heard.text, SETTINGS)
    # "reports" (one piece) passes at 0.6; a number is never "rare"; "milligrams" is sure enough
    assert [f.text for f in flags] == ["serracing"]
