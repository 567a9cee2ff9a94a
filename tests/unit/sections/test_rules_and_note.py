import logging
import sys

import pytest

from service.config import ConfigError
from service.sections.rules import load_rules


def test_every_section_has_a_loinc_code(rules):
    assert len(rules.sections) >= 17
    assert rules.sections["assessment_and_plan"].code == "51847-2"
    assert rules.sections["history_of_present_illness"].code == "10164-2"


@pytest.mark.parametrize("yaml_text, fragment", [
    ("sections:\n  plan:\n    code: '18776'\n    display: Plan\n    headings: [plan]\n", "not a LOINC code"),
    ("sections:\n  plan:\n    code: 18776-5\n    display: Plan\n    headings: ['plan(']\n", "invalid"),
    ("not_after: [no, yes]\nsections: {}\n", "valid string"),  # YAML 1.1 turns bare no/yes into booleans
    ("sections: {}\ncontext:\n  section_flags:\n    nowhere: [family]\n", "unknown sections"),
])
def test_bad_rules_fail_at_start_up_naming_the_file(tmp_path, yaml_text, fragment):
    path = tmp_path / "sections.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert "SCRIBE_SECTIONS__RULES_FILE" in str(caught.value) and fragment in str(caught.value)


def test_sections_reproduce_the_text_and_render(sectioner):
    text = "  Dictating for Dr. Smith. Chief complaint: cough <b>&</b> fever. Plan, rest.\n"
    note = sectioner.structure(text)
    assert "".join(note.text[s.start:s.end] for s in note.sections) == note.text == text
    assert [s.category for s in note.sections] == [None, "chief_complaint", "plan"]
    assert note.sections[0].text == "Dictating for Dr. Smith."
    assert note.render_text() == "Dictating for Dr. Smith.\n\nChief complaint\ncough <b>&</b> fever.\n\nPlan\nrest.\n"
    xhtml = note.render_xhtml()
    assert xhtml.startswith('<div xmlns="http://www.w3.org/1999/xhtml">') and "<b>" not in xhtml
    assert "<h3>Chief complaint</h3><p>cough &lt;b&gt;&amp;&lt;/b&gt; fever.</p>" in xhtml


def test_empty_and_headless_text(sectioner):
    assert sectioner.structure("").sections == []
    note = sectioner.structure("patient doing well")
    assert [(s.category, s.text) for s in note.sections] == [(None, "patient doing well")]


def test_structuring_prints_and_logs_nothing_of_the_text(sectioner, capfd, caplog):
    from loguru import logger as loguru_logger

    secret = "Chief complaint: zebra-unique-token cough. Medications: lisinopril."
    caught: list[str] = []
    sink = loguru_logger.add(caught.append, level="TRACE")  # PyRuSH's channel, at its most verbose
    caplog.set_level(logging.DEBUG)
    try:
        sectioner.structure(secret)
    finally:
        loguru_logger.remove(sink)
    out, err = capfd.readouterr()
    assert "zebra" not in out + err + caplog.text + "".join(caught)
    assert "PyRuSH" not in sys.modules or "medspacy_pyrush" not in sectioner._nlp.pipe_names
    assert "medspacy_pyrush" not in sectioner._nlp.pipe_names and "sentencizer" in sectioner._nlp.pipe_names
