"""The vocabulary stage's pure parts: names and doses from chart resources, fitting them to the engine (the review
flags that use them: test_review_chart.py)."""

import pytest

from service.config import VocabularySettings
from service.transcription.transcript import TranscribeOptions
from service.vocabulary.bias import biased, fitted
from service.vocabulary.chart import chart_terms
from service.vocabulary.models import Term
from service.vocabulary.terms import label_doses, label_names


@pytest.mark.parametrize("label, product, names", [
    ("Levothyroxine Sodium 0.075 MG Oral Tablet [Synthroid]", True, ["levothyroxine", "Synthroid"]),
    ("Potassium Chloride 20 MEQ Extended Release Oral Tablet", True, ["potassium chloride"]),
    ("Tamsulosin Hydrochloride 0.4 MG Oral Capsule", True, ["tamsulosin"]),
    ("Fluticasone Propionate 0.11 MG/ACTUAT Metered Dose Inhaler", True, ["fluticasone"]),
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
    # ... and their amounts, merged the same way: the order's 75 ug, its label's 0.075 mg, the statement's 88 mcg
    assert terms[0].doses == {(75.0, "microgram"), (0.075, "milligram"), (88.0, "microgram")}
    assert terms[1].doses == terms[2].doses == frozenset()


@pytest.mark.parametrize("label, doses", [
    ("Levothyroxine Sodium 0.075 MG Oral Tablet [Synthroid]", {(0.075, "milligram")}),
    ("Dulaglutide 1.5 MG/0.5ML Pen Injector [Trulicity]", {(1.5, "milligram")}),  # per 0.5 mL: not a dose
    ("Potassium Chloride 20 MEQ Extended Release Oral Tablet", {(20.0, "milliequivalent")}),
    ("Metformin 1,000 MG Oral Tablet", {(1000.0, "milligram")}),
    ("Vitamin D3 1000 UNT Oral Tablet", set()),  # a unit fhir-scribe does not know is not compared
])
def test_strengths_in_product_labels(label, doses):
    assert label_doses(label) == doses


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

