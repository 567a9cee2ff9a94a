import pytest

from service.sections.commands import CommandApplier


@pytest.fixture(scope="module")
def apply(rules):
    return CommandApplier(rules).apply


@pytest.mark.parametrize("spoken, written", [
    ("chest pain period", "chest pain."),
    ("chest pain, period.", "chest pain."),
    ("fever comma chills comma and cough period", "fever, chills, and cough."),
    ("plan colon rest period", "plan: rest."),
    ("allergies, colon, none", "allergies: none"),
    ("first line new line second line", "first line\nsecond line"),
    ("one period new paragraph two", "one.\n\ntwo"),
    ("chief complaint cough next section plan rest", "chief complaint cough\n\nplan rest"),
    ("is it better question mark", "is it better?"),
    ("Period. New line.", ".\n"),
])
def test_commands_become_punctuation_and_layout(apply, spoken, written):
    assert apply(spoken)[0] == written


@pytest.mark.parametrize("words", [
    "her last menstrual period was two weeks ago",
    "a period of observation",
    "the period was heavy",
    "a mass in the sigmoid colon",
    "family history colon cancer in father",
    "screening for colon cancer",
    "the colon is normal",
    "in a comma state",
])
def test_the_clinicians_own_words_stay(apply, words):
    assert apply(words) == (words, [])


def test_every_conversion_is_reported_where_it_landed(apply):
    text, edits = apply("plan colon rest period new line follow up")
    assert text == "plan: rest.\nfollow up"
    assert [(e.spoken, e.emitted) for e in edits] == [("colon", ":"), ("period", "."), ("new line", "\n")]
    assert all(text[e.at:e.at + len(e.emitted)] == e.emitted for e in edits)


def test_disabled_commands_change_nothing(rules):
    off = rules.model_copy(update={"dictation_commands": rules.dictation_commands.model_copy(update={"enabled": False})})
    assert CommandApplier(off).apply("pain period") == ("pain period", [])
