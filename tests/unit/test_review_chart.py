"""The chart checks of the review stage (service/review/chart.py): pure functions over a note's text and the chart's
terms. They point and explain; they never change a word, and on text with nothing wrong they stay quiet."""

import re

import pytest

from service.config import ReviewSettings
from service.review.chart import chart_flags
from service.vocabulary.models import Term
from tests.support.charts import review_dictations, terms_of

SETTINGS = ReviewSettings()
CHART = [Term("levothyroxine", "MedicationRequest", frozenset({"microgram"})), Term("apixaban", "MedicationRequest"),
         Term("atrial fibrillation", "Condition")]


def order(name: str, *doses: tuple[float, str]) -> Term:
    return Term(name, "MedicationRequest", frozenset(unit for _, unit in doses), frozenset(doses))


def kinds(text: str, terms: list[Term], kind: str) -> list[str]:
    flags = chart_flags(text, terms, SETTINGS)
    assert all(text[f.start:f.end] == f.text and f.audio_start is None for f in flags)  # audio: the caller's
    return [f.text for f in flags if f.kind == kind]


# unit-symbol, unit-vs-chart


def test_flags_point_and_never_change_the_text():
    text = "Levothyroxine 75mg every morning. Apixiban 5 milligrams twice daily. Atrial fibrillation."
    flags = chart_flags(text, CHART, SETTINGS)
    assert [(f.kind, f.text) for f in flags] == [("unit-vs-chart", "Levothyroxine 75mg"), ("unit-symbol", "75mg"),
                                                 ("drug-sound-alike", "Apixiban")]
    assert all(text[f.start:f.end] == f.text for f in flags)
    assert "micrograms" in flags[0].message and "apixaban" in flags[2].message


def test_no_flags_when_the_words_agree_with_the_chart():
    text = "Levothyroxine 75 micrograms daily and apixaban 5 milligrams. The patient is stable."
    assert chart_flags(text, CHART, SETTINGS) == []


# drug-sound-alike

HEARD_FOR = [  # the engine's words, the chart's name
    ("Listen April", "lisinopril"), ("hydroclarithy azide", "hydrochlorothiazide"), ("met forming", "metformin"),
    ("Carvedilo", "carvedilol"), ("apixiban", "apixaban"), ("Spirono lactone", "spironolactone"),
    ("Empa Glyphlosin", "empagliflozin"), ("Allo purinol", "allopurinol"), ("pantoprasol", "pantoprazole"),
    ("tamsulosan", "tamsulosin"), ("Dulaglutyde", "dulaglutide"), ("Rosuvastatine", "rosuvastatin"),
    # tiny.en's own, unbiased (bench/results/streaming-*.json)
    ("Atchawr Vastate in", "atorvastatin"), ("met form in", "metformin"), ("Met Foreman", "metformin"),
    ("levotroxine", "levothyroxine"), ("labothroxine", "levothyroxine"),
    # multi-word names and brands
    ("potassium chlorine", "potassium chloride"), ("sin thyroid", "Synthroid"), ("Jar Diance", "Jardiance"),
]


@pytest.mark.parametrize("heard, name", HEARD_FOR)
def test_a_chart_drug_heard_as_other_words_is_flagged_with_the_charts_name(heard, name):
    text = f"Medications. {heard} daily, as before."
    chart = [Term(name, "MedicationRequest"), Term("Penicillin", "AllergyIntolerance")]
    [flag] = chart_flags(text, chart, SETTINGS)
    assert (flag.kind, flag.text) == ("drug-sound-alike", heard)
    assert flag.message == f"'{heard}' sounds like {name} (in the chart): check the drug name"


def test_a_chart_term_as_the_chart_spells_it_is_never_a_sound_alike():
    chart = [Term("atorvastatin", "MedicationRequest"), Term("rosuvastatin", "MedicationStatement"),
             Term("Eliquis", "MedicationRequest"), Term("vitamin d", "MedicationStatement")]
    # rosuvastatin is like atorvastatin, "and atorvastatin" like rosuvastatin: both are said right, so neither
    text = "ATORVASTATIN 40 mg and rosuvastatin, and eliquis. Check vitamin levels."
    assert kinds(text, chart, "drug-sound-alike") == []


def test_the_best_span_wins_and_spans_stop_at_sentence_ends_and_numbers():
    chart = [Term("lisinopril", "MedicationRequest")]
    assert kinds("Medications. listen April purl 10 mg daily.", chart, "drug-sound-alike") == ["listen April"]
    assert kinds("We listen. April 10 was the visit.", chart, "drug-sound-alike") == []
    assert kinds("Listen 10 April.", chart, "drug-sound-alike") == []


def test_short_words_do_not_match_long_names_nor_short_names_ordinary_words():
    chart = [Term(n, "MedicationRequest") for n in ("hydrochlorothiazide", "codeine", "aspirin", "enalapril")]
    text = "Hydro therapy. It began with a cold in early April, then a knee sprain. She has no kidney disease."
    assert kinds(text, chart, "drug-sound-alike") == []
    # What sound cannot tell apart is flagged: "a sprain" is how an engine may well write "aspirin".
    assert kinds("She had a sprain.", chart, "drug-sound-alike") == ["a sprain"]


ORDINARY = """The patient is a pleasant retired postal worker who lives with her husband. The cough began after a cold
in early April and never fully went away. It is worse at night and when she lies flat. She denies fever, chills, or
weight loss. She has noticed some wheezing on the stairs and now stops halfway to catch her breath. She quit smoking
fifteen years ago and drinks a glass of wine on weekends. Her mother had heart disease. On exam she is alert and in no
distress at rest. The lungs have scattered wheezes with a prolonged expiratory phase. Her knee sprain has healed and
she walks around the block without limping. The headache comes in the afternoon, a dull band around her forehead;
she drinks four cups of coffee a day, so we talked about caffeine, sleep, and regular meals. Continue the home
exercises and return in two weeks or sooner if her breathing worsens. Her urine shows no protein. The spot on her back
has grown; we will remove it and call her with the results. She will wear a monitor for two weeks. Her sugars are
higher in the evenings since she started working late shifts. The wound was irrigated and closed, and the tetanus
shot was updated. Recheck potassium in one week, continue the current plan, and call if the pain comes back."""
COMMON_DRUGS = ["lisinopril", "atorvastatin", "metformin", "levothyroxine", "amlodipine", "omeprazole", "codeine",
                "aspirin", "enalapril", "heparin", "Coumadin", "clonidine", "naproxen", "warfarin", "Advair",
                "Entresto", "potassium chloride", "sertraline", "tamsulosin", "furosemide", "carvedilol", "Synthroid"]


def test_ordinary_clinical_prose_raises_no_sound_alikes():
    chart = [Term(n, "MedicationRequest") for n in COMMON_DRUGS]
    assert kinds(ORDINARY, chart, "drug-sound-alike") == []


# dose-vs-chart


def test_a_dose_unlike_the_charts_is_flagged_for_review_saying_a_change_may_be_intended():
    chart = [order("atorvastatin", (40, "milligram")), order("metoprolol", (25, "milligram"))]
    text = "Atorvastatin 14 milligrams at night. Metoprolol succinate fifty daily."
    flags = chart_flags(text, chart, SETTINGS)
    assert [(f.kind, f.text) for f in flags] == [("dose-vs-chart", "Atorvastatin 14 milligrams"),
                                                 ("dose-vs-chart", "Metoprolol succinate fifty")]
    assert flags[0].message == ("atorvastatin: 14 milligrams here; the chart has 40 mg. If the dose was changed, this "
                                "is expected; otherwise check it against the recording")
    assert "fifty here; the chart has 25 mg" in flags[1].message
    assert text == "Atorvastatin 14 milligrams at night. Metoprolol succinate fifty daily."  # nothing corrected


@pytest.mark.parametrize("said", [
    "levothyroxine 75 micrograms", "levothyroxine 0.075 mg", "levothyroxine seventy five micrograms",
    "levothyroxine 75", "carvedilol twelve point five milligrams", "carvedilol 12.5", "metformin 1 gram",
    "metformin 1,000 milligrams", "metformin one thousand", "Levothyroxine, 75 mcg",
])
def test_a_dose_the_chart_has_in_any_unit_of_its_kind_or_as_a_bare_number_is_not_flagged(said):
    chart = [order("levothyroxine", (75, "microgram"), (0.075, "milligram")), order("carvedilol", (12.5, "milligram")),
             order("metformin", (1000, "milligram"))]
    assert kinds(f"Medications. {said} daily.", chart, "dose-vs-chart") == []


@pytest.mark.parametrize("said, flagged", [
    ("levothyroxine 88 micrograms daily", "levothyroxine 88 micrograms"),
    ("levothyroxine 0.75 milligrams daily", "levothyroxine 0.75 milligrams"),
    ("metformin two grams daily", "metformin two grams"),
    ("carvedilol twenty five twice daily", "carvedilol twenty five"),
    ("increase levothyroxine to 100 micrograms", "levothyroxine to 100 micrograms"),
])
def test_a_dose_the_chart_does_not_have_is_flagged(said, flagged):
    chart = [order("levothyroxine", (75, "microgram"), (0.075, "milligram")), order("carvedilol", (12.5, "milligram")),
             order("metformin", (1000, "milligram"))]
    assert kinds(f"Plan. {said}.", chart, "dose-vs-chart") == [flagged]


@pytest.mark.parametrize("text", [
    "Continue atorvastatin for three months.", "Atorvastatin 2 tablets at night.", "Atorvastatin, 58-year-old man.",
    "Continue atorvastatin. 20 minutes of walking a day.", "Atorvastatin and lisinopril 10 milligrams daily.",
    "Atorvastatin which she takes every night 20 milligrams.", "Atorvastatin 98% adherence.",
    "Continue atorvastatin since 2019.", "Atorvastatin at 9 pm.",
    "Atorvastatin 20 units.",  # a unit of another kind: nothing in the chart to compare with
])
def test_numbers_that_are_not_this_drugs_dose_are_left_alone(text):
    chart = [order("atorvastatin", (40, "milligram")), order("lisinopril", (10, "milligram"))]
    assert kinds(text, chart, "dose-vs-chart") == []


def test_a_sound_alikes_dose_is_checked_against_the_drug_it_sounds_like():
    chart = [order("lisinopril", (10, "milligram"))]
    flags = chart_flags("Medications. Listen April 20 milligrams daily.", chart, SETTINGS)
    assert [(f.kind, f.text) for f in flags] == [("dose-vs-chart", "Listen April 20 milligrams"),
                                                 ("drug-sound-alike", "Listen April")]
    assert flags[0].message.startswith("lisinopril: 20 milligrams here; the chart has 10 mg.")


def test_a_unit_of_another_class_is_flagged_once_as_unit_vs_chart():
    chart = [order("levothyroxine", (75, "microgram"))]
    flags = chart_flags("Levothyroxine 75 mg daily.", chart, SETTINGS)
    assert [f.kind for f in flags] == ["unit-vs-chart", "unit-symbol"]


def test_the_charts_doses_reach_the_terms_from_orders_statements_and_labels():
    resources = [
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "Atorvastatin 40 MG Oral Tablet"},
         "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}]}]},
        {"resourceType": "MedicationStatement", "medicationCodeableConcept": {"text": "Levothyroxine 0.075 MG"},
         "dosage": [{"doseAndRate": [{"doseQuantity": {"value": 75, "code": "ug"}}]}]},
    ]
    terms = terms_of(resources)
    assert kinds("Atorvastatin 40 milligrams. Levothyroxine 75 micrograms.", terms, "dose-vs-chart") == []
    assert kinds("Atorvastatin 80 milligrams. Levothyroxine 50 micrograms.", terms, "dose-vs-chart") == [
        "Atorvastatin 80 milligrams", "Levothyroxine 50 micrograms"]


# The fixtures' reference texts with their charts: nothing is wrong there.

_CHANGE = re.compile(r"\b(increase|decrease|reduce|raise|lower|change|titrate|switch)", re.IGNORECASE)


@pytest.mark.parametrize("dictation", review_dictations(), ids=lambda d: d.name)
def test_the_reference_texts_raise_no_false_alarms_with_their_charts(dictation):
    text = dictation.reference
    flags = chart_flags(text, terms_of(dictation.resources()), SETTINGS)
    assert [f for f in flags if f.kind in ("drug-sound-alike", "unit-vs-chart", "unit-symbol")] == []
    for flag in (f for f in flags if f.kind == "dose-vs-chart"):  # only where the dictation changes the dose
        sentence = text[text.rfind(".", 0, flag.start) + 1:flag.end]
        changed = dictation.dose_changes
        assert _CHANGE.search(sentence) or any(d in flag.message for d in changed), flag
