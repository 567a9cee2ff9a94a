"""SMART authorization with a real authorization server (npm oidc-provider, tests/oidc) issuing RS384 JWT and
opaque tokens with launch context, a real FHIR server behind a recording proxy, and the service over HTTP.
Every refusal is checked to reach nothing on the FHIR server."""

import base64
import hashlib
import hmac
import json
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER, OTHER_ENCOUNTER, OTHER_PATIENT
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.oidc import OidcServer
from tests.support.waiting import holds, wait_for

SERVICE_AUDIENCE = "http://fhir-scribe.test"
SCOPES = "openid fhirUser patient/Patient.r patient/Encounter.r patient/DocumentReference.c"
DOCTOR = f"Practitioner/{DEMO_PRACTITIONER}"
SERVICE_TOKEN = "scribe-service-identity"  # fhir-scribe's own (sandbox) identity towards the FHIR server


@pytest.fixture(scope="module")
def service(tmp_path_factory, oidc, proxy):
    issuers = [{"issuer": oidc.issuer, "audiences": [proxy.url, SERVICE_AUDIENCE],
                "introspection": {"endpoint": oidc.openid_configuration()["introspection_endpoint"],
                                  "client_id": "scribe-confidential", "client_secret": "scribe-confidential-secret"}}]
    running = start_server(tmp_path_factory.mktemp("auth") / "server.log", **TEST_LIMITS,
                           SCRIBE_AUTH__ENABLED="true", SCRIBE_AUTH__ISSUERS=json.dumps(issuers),
                           SCRIBE_AUTH__LEEWAY_S="0", SCRIBE_FHIR__BASE_URL=proxy.url,
                           SCRIBE_FHIR__BEARER_TOKEN=SERVICE_TOKEN)
    yield running
    stop_server(running)


@pytest.fixture(autouse=True)
def clean(proxy):
    proxy.faults.reset()


def token(oidc, scopes=SCOPES, patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, aud=None, **kw) -> str:
    return oidc.user_token(patient, encounter, DOCTOR, scopes, aud=aud, **kw)


def dictate(service, audio, bearer=None, form=None, authorization=None):
    # A fresh Idempotency-Key: these tests share the FHIR server with others and are not about derived keys.
    headers = {"Idempotency-Key": f"auth-{uuid.uuid4().hex}"}
    if bearer or authorization:
        headers["Authorization"] = authorization or f"Bearer {bearer}"
    return httpx.post(service.url + "/v1/dictations", files={"file": ("a.ogg", audio)}, data=form or {},
                      headers=headers, timeout=120)


# ---------------------------------------------------------------- accepted

def test_smart_token_writes_as_the_user_in_its_launch_context(service, oidc, proxy, dictation):
    user_token = token(oidc)
    response = dictate(service, dictation.audio, user_token)  # no patient/encounter/author in the form
    assert response.status_code == 201, response.text
    fhir_calls = list(proxy.faults.authorizations)
    doc = httpx.get(response.json()["document_reference_url"]).json()
    assert doc["subject"]["reference"] == f"Patient/{DEMO_PATIENT}"
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{DEMO_ENCOUNTER}"}]
    assert doc["author"] == [{"reference": DOCTOR}]
    # The token was issued for the FHIR server: fhir-scribe acted there as the user (on-behalf-of).
    assert fhir_calls and set(fhir_calls) == {f"Bearer {user_token}"}


def test_token_for_fhir_scribe_itself_is_not_forwarded(service, oidc, proxy, dictation):
    response = dictate(service, dictation.audio, token(oidc, aud=SERVICE_AUDIENCE), form={"note_type": "11488-4"})
    assert response.status_code == 201, response.text
    # The user's token is for fhir-scribe, not the FHIR server: it never leaves; fhir-scribe's identity is used.
    assert proxy.faults.authorizations and set(proxy.faults.authorizations) == {f"Bearer {SERVICE_TOKEN}"}


def test_opaque_token_is_introspected(service, oidc, dictation):
    response = dictate(service, dictation.audio, token(oidc, opaque=True), form={"note_type": "34117-2"})
    assert response.status_code == 201, response.text


def test_other_endpoints_need_a_token_too(service, oidc, dictation):
    url = service.url + "/v1/audio/transcriptions"
    assert httpx.post(url, files={"file": ("a", dictation.audio)}, timeout=60).status_code == 401
    ok = httpx.post(url, files={"file": ("a", dictation.audio)}, headers={"Authorization": f"Bearer {token(oidc)}"},
                    timeout=60)
    assert ok.status_code == 200 and "chest pain" in ok.json()["text"].lower()
    assert httpx.post(service.url + "/v1/sections", json={"text": "plan rest"}).status_code == 401
    assert httpx.get(service.url + "/readyz").json()["auth"] == "enabled"


# ---------------------------------------------------------------- refused

def assert_refused(response, proxy, status, error, fragment):
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="fhir-scribe"')
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge
    assert fragment in response.json()["detail"]
    if status in (400, 401):
        # Nothing reached the FHIR server, not even an audit (absence: a quiet window, see tests/support/waiting.py).
        holds(lambda: proxy.faults.seen == [], for_s=0.3, what="no request at the FHIR server",
              detail=lambda: proxy.faults.seen)
        return
    # 403: nothing was read or written for the caller; the refusal itself is audited with fhir-scribe's identity.
    seen = wait_for(lambda: list(proxy.faults.seen), timeout=30, what="the refusal's AuditEvent at the proxy")
    assert [s.rsplit(" ", 1)[0] for s in seen] == ["POST /AuditEvent"]
    assert proxy.faults.authorizations == [f"Bearer {SERVICE_TOKEN}"]


def _parts(tok: str) -> list[dict]:
    return [json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in tok.split(".")[:2]]


def _b64(obj) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_no_token(service, proxy, dictation):
    assert_refused(dictate(service, dictation.audio), proxy, 401, None, "send Authorization: Bearer")


def test_not_a_bearer_header(service, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, authorization="Basic dXNlcjpwdw=="), proxy, 401,
                   "invalid_request", "is not 'Bearer <token>'")


def test_malformed_jwt(service, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, "aGVsbG8.d29ybGQ.c2ln"), proxy, 401, "invalid_token",
                   "not a well-formed JWT")


def test_unknown_opaque_token(service, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, "opaque-nonsense"), proxy, 401, "invalid_token",
                   "not active (introspection)")


def test_alg_none(service, oidc, proxy, dictation):
    header, claims = _parts(token(oidc))
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert_refused(dictate(service, dictation.audio, forged), proxy, 401, "invalid_token",
                   "signing algorithm is not one of RS256")


def test_hs256_signed_with_the_public_key(service, oidc, proxy, dictation):
    header, claims = _parts(token(oidc))
    public = next(k for k in oidc.jwks()["keys"] if k["kid"] == header["kid"])
    secret = RSAKey.import_key(public).as_pem(private=False)
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': header['kid']})}.{_b64(claims)}"
    signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    assert_refused(dictate(service, dictation.audio, f"{signing_input}.{signature}"), proxy, 401, "invalid_token",
                   "signing algorithm is not one of RS256")


def test_unknown_kid(service, oidc, proxy, dictation):
    _, claims = _parts(token(oidc))
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-the-issuers-key"})
    forged = jwt.encode({"alg": "RS384", "kid": "not-the-issuers-key"}, claims, stranger, algorithms=["RS384"])
    assert_refused(dictate(service, dictation.audio, forged), proxy, 401, "invalid_token", "signature check failed")


def test_tampered_payload(service, oidc, proxy, dictation):
    head, _, signature = token(oidc).split(".")
    claims = _parts(token(oidc))[1]
    claims["patient"] = OTHER_PATIENT
    assert_refused(dictate(service, dictation.audio, f"{head}.{_b64(claims)}.{signature}"), proxy, 401,
                   "invalid_token", "signature check failed")


def test_untrusted_issuer(service, proxy, dictation):
    with OidcServer(fhir_audience=proxy.url).start() as stranger:
        foreign = stranger.user_token(DEMO_PATIENT, DEMO_ENCOUNTER, DOCTOR, SCOPES)
    assert_refused(dictate(service, dictation.audio, foreign), proxy, 401, "invalid_token", "issuer is not trusted")


def test_wrong_audience(service, oidc, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, token(oidc, aud="http://127.0.0.1:9/someone-else")), proxy, 401,
                   "invalid_token", "not meant for this service (aud)")


def test_expired(service, oidc, proxy, dictation):
    short = token(oidc, aud=f"{proxy.url}?ttl=1")
    # Until the 1 s token expires (leeway 0) it is accepted; polled on a cheap call, then the dictation is refused.
    wait_for(lambda: httpx.post(service.url + "/v1/sections", json={"text": "plan rest"}, timeout=30,
                                headers={"Authorization": f"Bearer {short}"}).status_code == 401,
             timeout=60, interval=0.2, what="the 1 s token to be refused as expired")
    assert_refused(dictate(service, dictation.audio, short), proxy, 401, "invalid_token", "has expired")


def test_not_yet_valid(service, oidc, proxy, dictation):
    launch = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR, nbf_offset=3600)
    early = oidc.authorize(scope=f"launch {SCOPES}", launch=launch, aud=proxy.url, login=DOCTOR)["access_token"]
    assert_refused(dictate(service, dictation.audio, early), proxy, 401, "invalid_token", "not valid yet")


@pytest.mark.parametrize("scopes, fragment", [
    ("openid fhirUser patient/Patient.r patient/Encounter.r", "do not allow DocumentReference.c"),
    ("openid fhirUser patient/Patient.r patient/Encounter.r patient/Observation.c", "do not allow DocumentReference.c"),
    ("openid fhirUser patient/Patient.r patient/Encounter.r patient/DocumentReference.rs",
     "do not allow DocumentReference.c"),
    ("openid fhirUser patient/DocumentReference.c", "do not allow Patient.r"),
])
def test_insufficient_scope(service, oidc, proxy, dictation, scopes, fragment):
    assert_refused(dictate(service, dictation.audio, token(oidc, scopes=scopes)), proxy, 403, "insufficient_scope",
                   fragment)


def test_patient_mismatch(service, oidc, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, token(oidc), form={"patient": OTHER_PATIENT}), proxy, 403,
                   "insufficient_scope", "the request's patient is not the token's patient")


def test_encounter_mismatch(service, oidc, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, token(oidc), form={"encounter": OTHER_ENCOUNTER}), proxy, 403,
                   "insufficient_scope", "the request's encounter is not the token's encounter")


def test_author_mismatch(service, oidc, proxy, dictation):
    assert_refused(dictate(service, dictation.audio, token(oidc), form={"author": "Practitioner/someone-else"}),
                   proxy, 403, "insufficient_scope", "author is not the token's user")


def test_commit_of_a_draft_for_another_patient(service, oidc, proxy, dictation):
    draft = httpx.post(service.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                       headers={"Authorization": f"Bearer {token(oidc)}"}, timeout=120).json()
    proxy.faults.reset()
    other = token(oidc, patient=OTHER_PATIENT, encounter=OTHER_ENCOUNTER)
    response = httpx.post(service.url + "/v1/dictations/commit", json=draft,
                          headers={"Authorization": f"Bearer {other}"}, timeout=60)
    assert_refused(response, proxy, 403, "insufficient_scope", "the request's patient is not the token's patient")


def test_jwks_refetch_on_unknown_kid_is_rate_limited(service, oidc, proxy, dictation):
    """Forged kids must not turn the service into a JWKS-fetching amplifier."""
    _, claims = _parts(token(oidc))
    before = service.log().count('"auth.jwks_fetched"')
    for i in range(5):
        stranger = RSAKey.generate_key(2048, parameters={"kid": f"forged-{i}"})
        forged = jwt.encode({"alg": "RS384", "kid": f"forged-{i}"}, claims, stranger, algorithms=["RS384"])
        assert dictate(service, dictation.audio, forged).status_code == 401
    assert service.log().count('"auth.jwks_fetched"') - before <= 1


def test_a_refusal_audit_names_who_asked_and_nothing_else(service, oidc, proxy, fhir_server, dictation):
    response = dictate(service, dictation.audio, token(oidc), form={"patient": OTHER_PATIENT})
    assert response.status_code == 403
    wait_for(lambda: proxy.faults.seen, timeout=30, what="the refusal's AuditEvent at the proxy")
    request_id = response.headers["x-request-id"]
    audits = [a for a in fhir_server.search("AuditEvent", outcome="4")
              if {"identifier": {"value": request_id}} in [e.get("what") for e in a["entity"]]]
    assert len(audits) == 1
    audit = audits[0]
    assert audit["agent"][0]["who"] == {"reference": DOCTOR} and audit["agent"][0]["requestor"] is True
    assert {"reference": f"Patient/{DEMO_PATIENT}"} in [e.get("what") for e in audit["entity"]]
    assert "chest" not in json.dumps(audit).lower()
    from tests.support.fhir_validation import errors

    assert errors(audit) == []
