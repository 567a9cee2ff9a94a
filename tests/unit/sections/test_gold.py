"""Evaluation on the gold sets written for this purpose (tests/fixtures/sections): F1 >= 0.95, zero flag errors."""

from collections import defaultdict

import pytest

from tests.support.gold import Heading, f1, gold_context, gold_sections, locate, score

F1_FLOOR = 0.95
FLAGS = ("negated", "historical", "family", "hypothetical", "uncertain")


def test_gold_set_is_large_enough():
    notes, sentences = gold_sections(), gold_context()
    assert len(notes) >= 20 and len(sentences) >= 40
    assert {"formatted", "whisper", "unpunctuated", "spoken_commands", "distractors"} <= {n["style"] for n in notes}


def test_section_boundary_f1(sectioner):
    totals = defaultdict(lambda: [0, 0, 0])
    misses = []
    for note in gold_sections():
        structured = sectioner.structure(note["text"])
        assert "".join(structured.text[s.start:s.end] for s in structured.sections) == structured.text
        gold = locate(structured.text, note["headings"])
        predicted = [Heading(s.category, s.start) for s in structured.sections if s.category]
        tp, fp, fn = score(gold, predicted)
        for key in (note["style"], "all"):
            totals[key][0] += tp
            totals[key][1] += fp
            totals[key][2] += fn
        if fp or fn:
            misses.append(f"{note['id']}: gold {[(h.category, h.start) for h in gold]} "
                          f"got {[(h.category, h.start) for h in predicted]}")
    report = {style: round(f1(*counts), 3) for style, counts in sorted(totals.items())}
    print("section boundary F1:", report, "tp/fp/fn all:", totals["all"])
    print("\n".join(misses))
    assert f1(*totals["all"]) >= F1_FLOOR, "\n".join(misses)


@pytest.mark.parametrize("case", gold_context(), ids=lambda c: c["text"][:50])
def test_context_flags(sectioner, case):
    text = case["text"]
    section = case.get("section")
    if section:
        # Put the sentence under its heading, as it would sit in a note.
        heading = section.replace("_", " ")
        text = f"{heading}: {text}"
    note = sectioner.structure(text)
    for expected in case["findings"]:
        matches = [f for f in note.findings if f.text.lower() == expected["target"].lower()]
        assert matches, f"target {expected['target']!r} not found in {note.findings}"
        got = {flag: getattr(matches[0], flag) for flag in FLAGS}
        want = {flag: bool(expected.get(flag, False)) for flag in FLAGS}
        assert got == want, f"{expected['target']!r} in {text!r}"
