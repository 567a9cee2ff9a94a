import pytest

from service.auth.errors import Forbidden
from service.auth.principal import Principal
from service.auth.scopes import allows, parse, patient_scoped


@pytest.mark.parametrize("scope, resource, permission, expected", [
    ("patient/DocumentReference.c", "DocumentReference", "c", True),
    ("patient/DocumentReference.rs", "DocumentReference", "c", False),
    ("user/DocumentReference.cruds", "DocumentReference", "c", True),
    ("system/*.cruds", "AuditEvent", "c", True),
    ("patient/DocumentReference.write", "DocumentReference", "c", True),   # v1
    ("patient/DocumentReference.read", "DocumentReference", "c", False),   # v1 read-only
    ("patient/DocumentReference.read", "DocumentReference", "s", True),
    ("user/*.*", "Encounter", "r", True),
    ("patient/Observation.c", "DocumentReference", "c", False),            # another resource type
    ("patient/DocumentReference.c?category=clinical-note", "DocumentReference", "c", False),  # restricted: not trusted
    ("openid fhirUser launch", "DocumentReference", "c", False),
    ("patient/DocumentReference.cr", "DocumentReference", "r", True),
    ("patient/DocumentReference.rc", "DocumentReference", "c", False),     # v2 letters must be in c r u d s order
])
def test_scope_grants(scope, resource, permission, expected):
    assert allows(parse(scope), resource, permission) is expected


def principal(scope="patient/Patient.r patient/Encounter.r patient/DocumentReference.c", patient="p1",
              encounter="e1", fhir_user="Practitioner/d1") -> Principal:
    return Principal(issuer="https://as", subject="s", client_id="c", scope=scope, scopes=parse(scope),
                     patient=patient, encounter=encounter, fhir_user=fhir_user, audiences=["x"], token="t")


def test_token_context_fills_and_wins():
    assert principal().context(None, None, None, forwarded=False) == ("p1", "e1", "Practitioner/d1")
    assert principal().context("p1", "e1", "Practitioner/d1", forwarded=True) == ("p1", "e1", "Practitioner/d1")


@pytest.mark.parametrize("kwargs, request_ctx, fragment", [
    ({}, ("p2", None, None), "patient is not the token's patient"),
    ({}, ("p1", "e2", None), "encounter is not the token's encounter"),
    ({}, ("p1", None, "Practitioner/other"), "author is not the token's user"),
    ({"patient": None}, (None, None, None), "patient-scoped token without a patient"),
    ({"fhir_user": "Patient/p1"}, (None, None, None), "the token's user is a Patient"),
    ({"scope": "user/DocumentReference.c", "patient": None, "encounter": None}, (None, None, None), "no patient"),
    ({"scope": "system/*.c", "patient": None, "encounter": None, "fhir_user": None}, ("p9", None, None), "no author"),
    # A token without fhirUser cannot name the author, whatever else it carries.
    ({"fhir_user": None}, (None, None, "Practitioner/d1"), "no author"),
    ({"scope": "user/DocumentReference.c", "patient": None, "encounter": None, "fhir_user": None},
     ("p9", None, "Practitioner/anyone"), "no author"),
])
def test_context_refusals(kwargs, request_ctx, fragment):
    with pytest.raises(Forbidden, match=fragment) as caught:
        principal(**kwargs).context(*request_ctx, forwarded=True)
    assert caught.value.status == 403 and 'error="insufficient_scope"' in caught.value.headers["WWW-Authenticate"]


def test_user_scoped_token_may_choose_the_patient_only_when_the_ehr_checks_it():
    p = principal(scope="user/DocumentReference.c user/Patient.r", patient=None, encounter=None)
    assert not patient_scoped(p.scopes)
    # Forwarded to the FHIR server: the EHR enforces this user's access to p7 on every call.
    assert p.context("p7", "e7", None, forwarded=True) == ("p7", "e7", "Practitioner/d1")
    # Not forwarded: fhir-scribe would act with its own identity on a patient the EHR never tied to this user.
    with pytest.raises(Forbidden, match="not issued for the FHIR server"):
        p.context("p7", "e7", None, forwarded=False)
    system = principal(scope="system/*.cruds", patient=None, encounter=None, fhir_user=None)
    with pytest.raises(Forbidden, match="not issued for the FHIR server"):
        system.context("p7", None, None, forwarded=False)


def test_require_names_the_missing_scope():
    with pytest.raises(Forbidden) as caught:
        principal(scope="patient/DocumentReference.rs").require("DocumentReference", "c")
    assert 'scope="user/DocumentReference.c"' in caught.value.headers["WWW-Authenticate"]
