"""Attacks by a caller holding a *valid* token (OWASP API1 object-level authorization): reaching another patient's
note through the draft a client sends back, naming a source or an author, acting on a patient through
fhir-scribe's own identity, and bad input in tokens and headers that must be a clear 4xx, never a 500. Run on
sekmet-fhir and HAPI, with the real authorization server (oidc-provider) minting the tokens."""

from __future__ import annotations

import base64
import copy
import json
import uuid

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, OTHER_ENCOUNTER, OTHER_PATIENT
from tests.integration.test_auth import (DOCTOR, SERVICE_AUDIENCE, SERVICE_TOKEN, _b64, _parts,  # noqa: F401
                                         assert_refused, clean, dictate, service, token)
from tests.support.waiting import holds, wait_for

USER_SCOPES = "openid fhirUser user/Patient.r user/Encounter.r user/DocumentReference.c"


@pytest.fixture(scope="module")
def draft_a(service, oidc, dictation) -> dict:
    """One transcription for the whole module: patient A's reviewed draft."""
    response = httpx.post(service.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                          headers={"Authorization": f"Bearer {token(oidc)}", "Idempotency-Key": _key()}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _key() -> str:
    return f"attack-{uuid.uuid4().hex}"


def commit(service, draft: dict, bearer: str) -> httpx.Response:
    return httpx.post(service.url + "/v1/dictations/commit", json=draft, headers={"Authorization": f"Bearer {bearer}"},
                      timeout=60)


def for_patient_b(draft: dict, key: str) -> dict:
    other = copy.deepcopy(draft)
    other["context"].update(patient=OTHER_PATIENT, encounter=OTHER_ENCOUNTER)
    other["identifier"]["value"] = key
    other["text"] = "Plan: patient B's own note."
    return other


def notes_of(fhir_server, key: str) -> list[dict]:
    return fhir_server.search("DocumentReference", identifier=f"urn:fhir-scribe:dictation|{key}")


def audits_naming(fhir_server, reference: str) -> list[dict]:
    return [a for a in fhir_server.search("AuditEvent", _count="500")
            if {"reference": reference} in [e.get("what") for e in a.get("entity", [])]]


# ------------------------------------------------------------ finding 1: the identifier is the client's text

def test_a_commit_cannot_land_on_another_patients_note(service, oidc, proxy, fhir_server, draft_a):
    key_b = _key()
    written_b = commit(service, for_patient_b(draft_a, key_b), token(oidc, patient=OTHER_PATIENT,
                                                                     encounter=OTHER_ENCOUNTER))
    assert written_b.status_code == 201, written_b.text
    id_b = written_b.json()["document_reference_id"]
    audits_b = len(audits_naming(fhir_server, f"DocumentReference/{id_b}"))

    # Patient A's token commits A's draft under B's idempotency key: A gets A's own note; nothing of B is touched,
    # found, audited or named.
    hijack = copy.deepcopy(draft_a)
    hijack["identifier"]["value"] = key_b
    answer = commit(service, hijack, token(oidc))
    assert answer.status_code == 201, answer.text
    assert id_b not in answer.text
    mine = httpx.get(answer.json()["document_reference_url"]).json()
    assert mine["subject"]["reference"] == f"Patient/{DEMO_PATIENT}" and mine["id"] != id_b
    notes = notes_of(fhir_server, key_b)
    assert sorted(n["subject"]["reference"] for n in notes) == [f"Patient/{DEMO_PATIENT}", f"Patient/{OTHER_PATIENT}"]
    assert len(audits_naming(fhir_server, f"DocumentReference/{id_b}")) == audits_b

    # The same again with a different text is a conflict with A's note only, and names no note at all.
    hijack["text"] = "Plan: something else."
    conflict = commit(service, hijack, token(oidc))
    assert conflict.status_code == 409, conflict.text
    assert id_b not in conflict.text and mine["id"] not in conflict.json()["detail"]


@pytest.mark.parametrize("value", [
    "x,urn:fhir-scribe:dictation|",      # every note of the system, as a second alternative
    "abc12345|",                          # a system/value split
    "",                                   # empty: was a 500
    "k" * 100_000,                        # 100 KB: was written
    "abc12345$near",                      # search syntax
    "abc\\,12345",
])
def test_identifier_values_are_validated_before_any_search(service, oidc, proxy, draft_a, value):
    hostile = copy.deepcopy(draft_a)
    hostile["identifier"]["value"] = value
    proxy.faults.reset()
    response = commit(service, hostile, token(oidc))
    assert response.status_code in (413, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "matched" not in response.text and "resources" not in response.json()["detail"]
    assert proxy.faults.seen == []  # refused before anything reached the FHIR server


# ------------------------------------------------------------ finding 2: the source is the client's text

def test_a_client_named_source_is_refused(service, oidc, proxy, fhir_server, draft_a):
    other = commit(service, for_patient_b(draft_a, _key()), token(oidc, patient=OTHER_PATIENT,
                                                                  encounter=OTHER_ENCOUNTER)).json()
    sourced = copy.deepcopy(draft_a)
    sourced["identifier"]["value"] = _key()
    sourced["source"] = f"DocumentReference/{other['document_reference_id']}"
    proxy.faults.reset()
    response = commit(service, sourced, token(oidc))
    assert response.status_code == 422, response.text
    assert "source" in response.json()["detail"]
    assert not [s for s in proxy.faults.seen if s.startswith("POST")]
    assert notes_of(fhir_server, sourced["identifier"]["value"]) == []


# ------------------------------------------------------------ finding 3: confused deputy

def test_a_token_without_patient_is_not_carried_by_fhir_scribes_identity(service, oidc, proxy, dictation):
    user_token = oidc.user_token(None, None, DOCTOR, USER_SCOPES, aud=SERVICE_AUDIENCE)
    assert "patient" not in _parts(user_token)[1]
    assert_refused(dictate(service, dictation.audio, user_token, form={"patient": OTHER_PATIENT}), proxy, 403,
                   "insufficient_scope", "not issued for the FHIR server")


def test_a_token_without_patient_for_the_fhir_server_lets_the_ehr_decide(service, oidc, proxy, draft_a):
    user_token = oidc.user_token(None, None, DOCTOR, USER_SCOPES)  # audience: the FHIR server
    chosen = copy.deepcopy(draft_a)
    chosen["identifier"]["value"] = _key()
    chosen["context"].update(patient=OTHER_PATIENT, encounter=OTHER_ENCOUNTER)
    proxy.faults.reset()
    response = commit(service, chosen, user_token)
    assert response.status_code == 201, response.text
    # Every call about that patient (context check, write) carried the user's own token: the EHR enforced it.
    assert proxy.faults.authorizations and set(proxy.faults.authorizations) == {f"Bearer {user_token}"}


def test_the_author_comes_from_the_token_only(service, oidc, proxy, draft_a):
    forged = copy.deepcopy(draft_a)
    forged["identifier"]["value"] = _key()
    forged["context"]["author"] = "Practitioner/someone-else"
    proxy.faults.reset()
    assert_refused(commit(service, forged, token(oidc)), proxy, 403, "insufficient_scope",
                   "author is not the token's user")


# ------------------------------------------------------------ finding 11: draft fields out of range

@pytest.mark.parametrize("path, value", [
    ("audio.duration_s", 1e300), ("audio.duration_s", -1e6), ("dictated_at", "0001-01-01T00:00:00Z"),
    ("dictated_at", "9999-01-01T00:00:00Z"), ("context.patient", ".."), ("language", "x" * 5000),
])
def test_out_of_range_draft_fields_are_refused(service, oidc, proxy, draft_a, path, value):
    bad = copy.deepcopy(draft_a)
    target = bad
    *parents, leaf = path.split(".")
    for name in parents:
        target = target[name]
    target[leaf] = value
    proxy.faults.reset()
    response = commit(service, bad, token(oidc))
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith(":invalid-request") and path.split(".")[-1] in response.json()["detail"]
    assert proxy.faults.seen == []


# ------------------------------------------------------------ findings 10 and 13: tokens and headers

def _jwt(header, claims) -> str:
    return f"{_b64(header)}.{_b64(claims)}.{_b64(b'sig')}"


@pytest.mark.parametrize("forged", [
    _jwt([1], {"iss": "x"}),
    _jwt({"alg": "RS256"}, None),
    _jwt({"alg": "RS256"}, [1, 2]),
    _jwt("header", {"iss": "x"}),
    _jwt({"alg": "RS256"}, 42),
    f"{_b64({'alg': 'RS256'})}.{base64.urlsafe_b64encode(b'[' * 5000).rstrip(b'=').decode()}.c2ln",
])
def test_jwt_parts_that_are_not_objects_are_401(service, proxy, dictation, forged):
    assert_refused(dictate(service, dictation.audio, forged), proxy, 401, "invalid_token", "not a well-formed JWT")


def test_claims_of_the_wrong_type_are_401(service, oidc, proxy, dictation):
    header, claims = _parts(token(oidc))
    for name, value in (("scope", 42), ("scope", {"a": 1}), ("patient", ["p1"]), ("iss", 1), ("aud", [1]),
                        ("exp", "tomorrow")):
        forged = _jwt(header, {**claims, name: value})
        response = dictate(service, dictation.audio, forged)
        assert response.status_code == 401, (name, value, response.text)


def test_a_hostile_alg_is_not_echoed(service, proxy, dictation):
    for alg in ("é\u2028\"x\"", "none\", error=\"ok", "RS256\r\nX-Injected: 1"):
        response = dictate(service, dictation.audio, _jwt({"alg": alg, "typ": "JWT"}, {"iss": "x"}))
        assert response.status_code == 401, response.text
        challenge = response.headers["www-authenticate"]
        assert challenge.isascii() and alg not in challenge and "X-Injected" not in challenge
        assert challenge.count('"') == 6  # realm, error, error_description: nothing broke out of the quotes


def test_two_authorization_headers_are_400(service, oidc, proxy, dictation):
    valid = token(oidc)
    twice = httpx.post(service.url + "/v1/dictations", files={"file": ("a.ogg", dictation.audio)},
                       headers=[("Authorization", f"Bearer {valid}"), ("Authorization", "Bearer junk")], timeout=60)
    assert_refused(twice, proxy, 400, "invalid_request", "more than one Authorization header")
    folded = dictate(service, dictation.audio, authorization=f"Bearer {valid}, Bearer junk")
    assert_refused(folded, proxy, 400, "invalid_request", "exactly one bearer token")
    assert "problem+json" in folded.headers["content-type"]


# ------------------------------------------------------------ finding 9: refusal audits are bounded per caller

def test_refusal_audits_are_rate_limited_per_caller(service, oidc, proxy):
    caller = f"Practitioner/flooder-{uuid.uuid4().hex[:8]}"  # a caller of its own: an untouched minute
    mismatched = oidc.user_token(DEMO_PATIENT, DEMO_ENCOUNTER, caller, "openid fhirUser patient/Patient.r "
                                 "patient/Encounter.r patient/DocumentReference.c")
    proxy.faults.reset()
    for _ in range(25):  # cheap 403s: the patient mismatch is found before the body is read
        response = httpx.post(service.url + "/v1/sections", json={"text": "Plan: rest."},
                              headers={"Authorization": f"Bearer {mismatched}"}, timeout=30)
        assert response.status_code == 200
        refused = httpx.post(service.url + "/v1/dictations", data={"patient": OTHER_PATIENT},
                             files={"file": ("a.ogg", b"OggS" + b"\0" * 100)},
                             headers={"Authorization": f"Bearer {mismatched}"}, timeout=30)
        assert refused.status_code == 403, refused.text

    def audits() -> list[str]:
        return [s for s in proxy.faults.seen if s.startswith("POST /AuditEvent")]

    wait_for(lambda: len(audits()) >= 10, timeout=60, what="10 refusal AuditEvents at the proxy")
    # ... and no 11th (absence: a quiet window). refusal_audits_per_minute default.
    holds(lambda: len(audits()) == 10, for_s=0.5, what="exactly 10 refusal AuditEvents",
          detail=lambda: proxy.faults.seen)
    assert '"audit.refusals_throttled"' in service.log()


def test_the_ehr_refusing_the_users_own_token_is_said_so(service, oidc, proxy, draft_a):
    """A forwarded token the EHR refuses is the user's session ending, not fhir-scribe's credentials failing."""
    mine = copy.deepcopy(draft_a)
    mine["identifier"]["value"] = _key()
    proxy.faults.reset()
    proxy.faults.only_method = None
    proxy.faults.fail_next, proxy.faults.status = 1, 401
    response = commit(service, mine, token(oidc))  # audience: the FHIR server, so forwarded
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["type"].endswith(":fhir-refused-user") and "user's access token" in body["detail"]
    assert "fhir-scribe's credentials" not in body["detail"] and body["draft"]["text"] == mine["text"]
