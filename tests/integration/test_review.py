"""Review flags end to end (issue 17): every speech fixture with its patient's chart in the FHIR server (sekmet and
HAPI), drafted through the service's HTTP API with the real model, and the flags held against what the engine
really got wrong (each transcript aligned to its reference after Whisper's English normalizer).

The bounds are the bench's figures on these fixtures (bench/review.py, docs/benchmarks.md) less a margin; the bench
holds the issue's goals, these keep the product near them."""

import httpx
import pytest

from service.demo import DEMO_PRACTITIONER
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.charts import review_dictations
from tests.support.errors import errors, normalized

AUTHOR = f"Practitioner/{DEMO_PRACTITIONER}"
DICTATIONS = review_dictations()


@pytest.fixture(scope="module")
def drafts(tmp_path_factory, proxy):
    for dictation in DICTATIONS:
        dictation.seed(proxy.url)
    service = start_server(tmp_path_factory.mktemp("review") / "server.log", **TEST_LIMITS,
                           SCRIBE_FHIR__BASE_URL=proxy.url)
    try:
        made = {}
        for dictation in DICTATIONS:
            response = httpx.post(service.url + "/v1/dictations/draft", files={"file": ("d.ogg", dictation.audio)},
                                  data={"patient": dictation.patient, "author": AUTHOR}, timeout=120)
            assert response.status_code == 200, response.text
            made[dictation.name] = response.json()
        yield made
    finally:
        stop_server(service)


def touched(draft: dict, flags: list[dict]) -> set[int]:
    """Indices of the note's words (whitespace tokens) under any of ``flags``."""
    return {i for i, (start, end) in enumerate(_words(draft["text"]))
            if any(start < f["end"] and f["start"] < end for f in flags)}


def _words(text: str) -> list[tuple[int, int]]:
    import re

    return [m.span() for m in re.finditer(r"\S+", text)]


def test_flags_point_into_the_text_and_the_recording(drafts):
    kinds = set()
    for name, draft in drafts.items():
        for flag in draft["flags"]:
            kinds.add(flag["kind"])
            assert draft["text"][flag["start"]:flag["end"]] == flag["text"], (name, flag)
            # <=: Whisper can time a last word at zero length (seen: "increase." at 44.38-44.38); the app pads
            assert 0 <= flag["audio_start"] <= flag["audio_end"] <= draft["audio"]["duration_s"] + 0.5, (name, flag)
    assert {"low-confidence", "drug-sound-alike", "dose-vs-chart"} <= kinds, kinds


def test_flags_cover_most_of_the_engines_errors_in_a_small_share_of_the_words(drafts):
    wrong = covered = words = flagged = 0
    for dictation in DICTATIONS:
        draft = drafts[dictation.name]
        spans = _words(draft["text"])
        found = errors(dictation.reference, [draft["text"][a:b] for a, b in spans])
        marked = touched(draft, draft["flags"])
        wrong += len(found.errors)
        covered += sum(bool(error & marked) for error in found.errors)
        words += len(spans)
        flagged += len(marked)
    assert wrong >= 50, wrong  # enough errors for the shares to mean something
    # The goal is >= 60 % covered with <= 15 % flagged; bench/review.py measures 62.6 % / 9.7 % on these
    # fixtures. Through the service (the chart read from the FHIR server, the note's whitespace words counted here)
    # a few words differ: measured 59.6 % / 9.5 % on sekmet. Hence 0.55 here: a floor, not the goal.
    assert covered / wrong >= 0.55 and flagged / words <= 0.15, (covered, wrong, flagged, words)


def test_chart_drugs_that_came_out_wrong_are_flagged_and_mostly_named(drafts):
    wrong, flagged, named = [], [], []
    for dictation in DICTATIONS:
        draft = drafts[dictation.name]
        spans = _words(draft["text"])
        found = errors(dictation.reference, [draft["text"][a:b] for a, b in spans])
        reference = normalized(dictation.reference)
        for drug in {d for d in dictation.drugs if _in_chart(dictation, d)}:
            for at in (i for i, token in enumerate(reference) if token == drug):
                hit = [e for e, position, kind in zip(found.errors, found.reference_positions, found.kinds)
                       if kind != "insert" and position == at]
                if not hit:
                    continue
                wrong.append((dictation.name, drug, at))
                near = [f for f in draft["flags"] if touched(draft, [f]) & {i for e in hit for i in e}]
                if near:
                    flagged.append(wrong[-1])
                if any(drug in f["message"].lower() for f in near):
                    named.append(wrong[-1])
    assert len(wrong) >= 6, wrong
    # The goal: at least 90 % flagged. Named (a sound-alike flag saying which chart drug it may be): the
    # bench has 8 of 9 on tiny.en; "loss our" for losartan is too far from the name to say so.
    assert len(flagged) >= 0.9 * len(wrong), sorted(set(wrong) - set(flagged))
    assert len(named) >= 0.75 * len(wrong), sorted(set(wrong) - set(named))


def test_a_dose_unlike_the_charts_is_flagged_for_review_never_changed(drafts):
    for dictation in DICTATIONS:
        draft = drafts[dictation.name]
        doses = [f for f in draft["flags"] if f["kind"] == "dose-vs-chart"]
        for drug in dictation.dose_changes:  # the clinician changed this dose: the flag says the chart differs
            assert any(drug in f["message"].lower() and "chart" in f["message"] for f in doses), (dictation.name, doses)
    # The engine's own dose error in the chest-pain dictation: atorvastatin 40 heard as 14, against a 40 mg order.
    chest = drafts["dictation_chest_pain"]
    assert any("atorvastatin" in f["message"].lower() and "40" in f["message"]
               for f in chest["flags"] if f["kind"] == "dose-vs-chart"), chest["flags"]
    assert "atorvastatin 14" in chest["text"].lower()  # flagged, not corrected


def _in_chart(dictation, drug: str) -> bool:
    chart = dictation.chart
    labels = [r.get("text") or r.get("medication", "") for r in chart["requests"]] + chart["statements"] + \
        chart["allergies"]
    return any(drug in label.lower() for label in labels)
