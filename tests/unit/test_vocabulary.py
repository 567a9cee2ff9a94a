"""The vocabulary stage's pure parts: names from chart resources, fitting them to the engine, review flags."""

import pytest

from service.config import VocabularySettings
from service.transcription.transcript import TranscribeOptions
from service.vocabulary.bias import biased, fitted
from service.vocabulary.chart import chart_terms
from service.vocabulary.checks import review_flags
from service.vocabulary.models import Term
from service.vocabulary.terms import label_names


@pytest.mark.parametrize("label, product, names", [
    ("Levothyroxine Sodium 0.075 MG Oral Tablet [Synthroid]", True, ["levothyroxine", "Synthroid"]),
    ("Potassium Chloride 20 MEQ Extended Release Oral Tablet", True, ["potassium chloride"]),
    ("Tamsulosin Hydrochloride 0.4 MG Oral Capsule", True, ["tamsulosin"]),
    ("Type 2 diabetes mellitus", False, ["type 2 diabetes mellitus"]),
    ("Essential hypertension (disorder)", False, ["essential hypertension"]),
])
def test_names_as_spoken(label, product, names):
    assert label_names(label, product=product) == names


def test_chart_terms_in_order_of_relevance_one_per_name_with_dose_units():
    subject = {"reference": "Patient/p"}
    found = {
        "MedicationRequest": [
            {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/m1"},
             "subject": subject, "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 75, "code": "ug"}}]}]},
            {"resourceType": "Medication", "id": "m1", "code": {"text": "Levothyroxine Sodium 0.075 MG Oral Tablet"}},
        ],
        "MedicationStatement": [{"resourceType": "MedicationStatement",
                                 "medicationCodeableConcept": {"coding": [{"display": "levothyroxine 88 MCG"}]}}],
        "AllergyIntolerance": [{"resourceType": "AllergyIntolerance", "code": {"text": "Penicillin"}}],
        "Condition": [{"resourceType": "Condition", "code": {"text": "Hypothyroidism"}}],
    }
    terms = chart_terms(found)
    assert [(t.name, t.source) for t in terms] == [("levothyroxine", "MedicationRequest"),
                                                   ("penicillin", "AllergyIntolerance"),
                                                   ("hypothyroidism", "Condition")]
    assert terms[0].unit_classes == {"microgram", "milligram"}  # the order's dose, its strengths, the statement's


def test_short_lists_are_hotwords_long_ones_the_prompt_never_both():
    settings = VocabularySettings(hotwords_max_terms=3, prompt_max_terms=4)
    terms = [Term(f"drug{i}", "MedicationRequest") for i in range(6)]
    assert fitted(terms[:3], settings) == ("hotwords", terms[:3])
    assert fitted(terms, settings) == ("initial_prompt", terms[:4])
    assert fitted(terms, VocabularySettings(hotwords_max_terms=3, prompt_max_terms=0)) == ("hotwords", terms[:3])
    assert fitted([], settings) == (None, [])
    options = TranscribeOptions(hotwords="department words", initial_prompt=None)
    hot = biased(options, "hotwords", terms[:2])
    assert hot.hotwords == "department words drug0 drug1" and hot.initial_prompt is None
    prompt = biased(options, "initial_prompt", terms[:2])
    assert prompt.initial_prompt == "Medications and problems: drug0, drug1." and prompt.hotwords == "department words"


CHART = [Term("levothyroxine", "MedicationRequest", frozenset({"microgram"})), Term("apixaban", "MedicationRequest"),
         Term("atrial fibrillation", "Condition")]


def test_flags_point_and_never_change_the_text():
    text = "Levothyroxine 75mg every morning. Apixiban 5 milligrams twice daily. Atrial fibrillation."
    flags = review_flags(text, CHART, 0.8)
    assert [(f.kind, f.text) for f in flags] == [("unit-vs-chart", "Levothyroxine 75mg"), ("unit-symbol", "75mg"),
                                                 ("drug-near-miss", "Apixiban")]
    assert all(text[f.start:f.end] == f.text for f in flags)
    assert "micrograms" in flags[0].message and "apixaban" in flags[2].message


def test_no_flags_when_the_words_agree_with_the_chart():
    text = "Levothyroxine 75 micrograms daily and apixaban 5 milligrams. The patient is stable."
    assert review_flags(text, CHART, 0.8) == []
