"""Long texts: sectioning is linear (commands, matching, sections, ConText) and the worker bounds what it accepts.

No test here asserts a duration (speed is measured by bench/sections.py): the texts are long enough that the old
quadratic code would take minutes, and the results are checked exactly. The medspaCy steps are compared with
medspaCy's own components on the same rules.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import medspacy
import pytest
from medspacy.common.util import prune_overlapping_matches

from service.config import SectionsSettings
from service.errors import Overloaded, Unprocessable
from service.sections import engine
from service.sections.commands import HEADING_WINDOW, CommandApplier, _previous_word
from service.sections.headings import any_heading_at_end
from service.sections.worker import SectionsTimeout, SectionsWorker

SPEECH = Path(__file__).resolve().parents[2] / "fixtures" / "speech"
FLAGS = ("is_negated", "is_historical", "is_family", "is_hypothetical", "is_uncertain")
LIMIT = 200_000


def dictation() -> str:
    return " ".join(p.read_text().strip() for p in sorted(SPEECH.glob("*.txt")))


def repeat(unit: str, chars: int = LIMIT) -> str:
    return " ".join([unit] * (chars // (len(unit) + 1)))


# --- dictation commands -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def applier(rules):
    return CommandApplier(rules)


@pytest.mark.parametrize("unit, out", [
    ("period new line period", ".\n."),
    ("chest pain period new line", "chest pain.\n"),
    ("plan colon rest comma", "plan: rest,"),
])
def test_commands_on_200k_characters_of_command_words(applier, unit, out):
    n = LIMIT // (len(unit) + 1)
    text, edits = applier.apply(repeat(unit))
    assert len(edits) == n * len(re.findall(r"period|new line|colon|comma", unit))
    separator = "" if out.endswith("\n") else " "
    assert text == separator.join([out] * n)
    assert edits[-1].at == text.rindex(edits[-1].emitted)


def test_heading_before_colon_is_found_in_a_window_exactly_as_in_the_whole_prefix(rules, applier):
    assert applier._heading_window < HEADING_WINDOW  # the widest configured heading fits: the cap never cuts one
    whole = any_heading_at_end(rules)
    text = (dictation() + " plan , \n  colon assessment and plan,colon x" + " " * 400 + "hpi" + " \t" * 300).lower()
    for position in range(len(text) + 1):
        assert applier._heading_ends_at(text, position) == bool(whole.search(text[:position])), position


def test_previous_word_is_found_in_a_window_exactly_as_in_the_whole_prefix():
    text = "a " + "x" * 500 + " ,.;" * 100 + " don't stop-gap " + "é" * 70 + "\n\n"
    for position in range(len(text) + 1):
        words = re.findall(r"[\w'-]+", text[:position])
        if 0 < position < len(text) and re.match(r"[\w'-]{2}", text[position - 1:position + 1]):
            continue  # mid-word: a command word never starts there
        assert _previous_word(text, position) == (words[-1] if words else None), position


# --- the medspaCy steps --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(sectioner):
    """medspaCy's own components (as the pipeline used them before engine.py), fed the Sectioner's rules."""
    nlp = medspacy.load(medspacy_enable=["medspacy_target_matcher"])
    nlp.add_pipe("sentencizer", before="medspacy_target_matcher")
    nlp.get_pipe("medspacy_target_matcher").add(list(sectioner._targets.rule_map.values()))
    nlp.add_pipe("medspacy_sectionizer", config={"rules": None, "apply_sentence_boundary": True, "span_attrs": None}
                 ).add(list(sectioner._headings.rule_map.values()))
    nlp.add_pipe("medspacy_context", config={"rules": None}).add(list(sectioner._context.rule_map.values()))
    return nlp


def ours(sectioner, text):
    doc = sectioner._sentencizer(sectioner._nlp.make_doc(text))
    engine.add_targets(doc, sectioner._targets)
    sections = engine.find_sections(doc, sectioner._headings)
    engine.apply_context(doc, sectioner._context)
    return doc, sections


def summary(doc, sections):
    return {
        "sections": [tuple(s) for s in sections],
        "sentences": [s.start for s in doc.sents],
        "entities": [(e.start, e.end, e.label_, e._.target_rule.literal, [getattr(e._, f) for f in FLAGS],
                      [(m.category, m.modifier_span, m.scope_span) for m in e._.modifiers]) for e in doc.ents],
    }


def soup(seed: int, count: int) -> list[str]:
    """Headings, modifiers of every direction, terminators, targets, odd punctuation; sentences under 100 tokens."""
    words = ["plan", "plan.x", "Plan:", "A/P", "medications", "HPI", "history of present illness", "no", "not",
             "denies", "mother", "sister", "history", "possible", "but", ";", "the patient", "has", "was ruled out",
             "has been ruled out", "was negative", "cannot rule out", "call if", "family history", "status post",
             "free of", "pain", "chest pain", "fever", "cough", "diabetes", "colon cancer", "in 2015", "in 2015.5",
             "x", "and", "of", ",", ", on", "\n", "drug allergies", "allergies", "exam was", "physical exam"]
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(rng.randint(1, 4))]
        texts.append(". ".join(sentences))
    return texts


def test_engine_reproduces_medspacy(sectioner, reference):
    from tests.support.gold import gold_context, gold_sections

    texts = [n["text"] for n in gold_sections()] + [c["text"] for c in gold_context()]
    texts += [p.read_text() for p in sorted(SPEECH.glob("*.txt"))] + soup(1, 150) + ["", " ", "plan"]
    for text in texts:
        doc, sections = ours(sectioner, text)
        theirs = reference(text)
        medspacy_sections = [(s.category, s.title_start, s.body_start, s.body_end) for s in theirs._.sections]
        assert summary(doc, sections) == summary(theirs, medspacy_sections), text


def test_pruning_matches_medspacy():
    rng = random.Random(7)
    for _ in range(2000):
        matches = []
        for _ in range(rng.randint(0, 25)):
            start = rng.randint(0, 40)
            matches.append((rng.randint(1, 5), start, start + rng.randint(1, 6)))
        assert engine.prune_overlapping(list(matches)) == prune_overlapping_matches(list(matches)), matches


def test_200k_characters_of_dictation_are_sectioned_whole(sectioner):
    one = sectioner.structure(dictation())
    n = LIMIT // (len(dictation()) + 1)
    note = sectioner.structure(repeat(dictation()))
    assert "".join(note.text[s.start:s.end] for s in note.sections) == note.text
    assert len(note.sections) == n * len(one.sections)
    assert len(note.findings) == n * len(one.findings)
    assert [f.negated for f in note.findings] == [f.negated for f in one.findings] * n


def test_headings_that_split_a_token_are_resolved_without_walking_the_text(sectioner):
    note = sectioner.structure(repeat("plan.x"))  # "plan.x" is one token, the heading "plan." is not
    assert len(note.sections) == LIMIT // len("plan.x ")


def test_one_unpunctuated_sentence_is_cut_for_context(sectioner):
    text = repeat(re.sub(r"[^\w\s'-]", "", dictation()).lower(), 20_000)
    doc, _ = ours(sectioner, text)
    assert max(len(s) for s in doc.sents) <= engine.MAX_SENTENCE_TOKENS
    no_pain = sectioner.structure(repeat("no pain"))
    assert len(no_pain.findings) == LIMIT // len("no pain ") and all(f.negated for f in no_pain.findings)


# --- the worker ----------------------------------------------------------------------------------------------------

def worker(sectioner, **settings) -> SectionsWorker:
    return SectionsWorker(SectionsSettings(**settings), sectioner)


def test_over_the_limit_is_unprocessable(sectioner):
    sections = worker(sectioner, max_chars=1000, workers=1)
    try:
        assert asyncio.run(sections.structure("a" * 1000)).text == "a" * 1000
        with pytest.raises(Unprocessable, match="the text has 1001 characters; the limit is 1000"):
            asyncio.run(sections.structure("a" * 1001))
    finally:
        sections.shutdown()


def test_a_text_over_its_time_budget_answers_503(sectioner):
    sections = worker(sectioner, workers=1, timeout_s=0.001)
    try:
        with pytest.raises(SectionsTimeout) as caught:
            asyncio.run(sections.structure(repeat(dictation())))
        failure = caught.value
        assert (failure.status, failure.slug) == (503, "sections-timeout")
        assert failure.headers == {"Retry-After": "1"} and "took longer than 0.001 s" in failure.detail
    finally:
        sections.shutdown()


def test_a_full_queue_is_overloaded(sectioner):
    sections = worker(sectioner, workers=1, timeout_s=120)

    async def run():
        long = repeat(dictation(), 100_000)
        first = asyncio.create_task(sections.structure(long))
        while sections.waiting:  # until the one thread has taken it
            await asyncio.sleep(0.001)
        queued = [asyncio.create_task(sections.structure(long)) for _ in range(sections.max_waiting)]
        await asyncio.sleep(0)  # each has submitted its text
        assert sections.waiting == sections.max_waiting == 4
        with pytest.raises(Overloaded) as caught:
            await sections.structure("plan rest")
        assert caught.value.status == 503 and "Retry-After" in caught.value.headers
        notes = await asyncio.gather(first, *queued)
        assert all(len(note.text) == len(long) for note in notes)
        assert (await sections.structure("plan rest")).sections[0].category == "plan"  # room again

    try:
        asyncio.run(run())
    finally:
        sections.shutdown()


def test_a_slow_text_does_not_hold_up_a_short_one(sectioner):
    sections = worker(sectioner, workers=2, timeout_s=120)

    async def run():
        slow = asyncio.create_task(sections.structure(repeat("no pain but")))
        while sections.waiting:
            await asyncio.sleep(0.001)
        short = await sections.structure("chief complaint cough plan rest")
        assert [s.category for s in short.sections] == ["chief_complaint", "plan"]
        assert not slow.done()  # the short text was answered while the long one was still being sectioned
        assert len((await slow).findings) == LIMIT // len("no pain but ")

    try:
        asyncio.run(run())
    finally:
        sections.shutdown()
