"""Bearer callers of /v1 whose tokens fhir-scribe cannot verify itself (an EHR's HS256 JWT without iss/aud, as the
SMART reference launcher issues): introspection decides, with the context it answers. Real authorization server
(oidc-provider in that shape), real FHIR server behind the recording proxy."""

from __future__ import annotations

import json

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, OTHER_PATIENT
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.oidc import OidcServer, jwt_parts

DOCTOR = "Practitioner/demo-practitioner"
SCOPES = "openid fhirUser patient/Patient.r patient/Encounter.r patient/DocumentReference.c"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, proxy):
    oidc = OidcServer(fhir_audience=proxy.url, access_token_shape="hs256-nested").start()
    issuers = [{"issuer": oidc.issuer, "audiences": [proxy.url],
                "introspection": {"endpoint": oidc.openid_configuration()["introspection_endpoint"],
                                  "client_id": "scribe-post", "client_secret": "scribe-post-secret",
                                  "auth_method": "client_secret_post"}}]
    service = start_server(tmp_path_factory.mktemp("bearer-shapes") / "server.log", **TEST_LIMITS,
                           SCRIBE_AUTH__ENABLED="true", SCRIBE_AUTH__ISSUERS=json.dumps(issuers),
                           SCRIBE_FHIR__BASE_URL=proxy.url)
    yield oidc, service
    stop_server(service)
    oidc.stop()


def test_an_hs256_token_without_iss_is_introspected_and_forwarded(stack, proxy, dictation):
    oidc, service = stack
    token = oidc.user_token(DEMO_PATIENT, DEMO_ENCOUNTER, DOCTOR, SCOPES, client_id="scribe-post")
    header, claims = jwt_parts(token)
    assert header["alg"] == "HS256" and "iss" not in claims and "aud" not in claims
    proxy.faults.reset()
    response = httpx.post(service.url + "/v1/dictations", files={"file": ("a.ogg", dictation.audio)},
                          headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert response.status_code == 201, response.text
    assert set(proxy.faults.authorizations) == {f"Bearer {token}"}  # the EHR saw the user's own token
    doc = httpx.get(response.json()["document_reference_url"]).json()
    assert doc["subject"]["reference"] == f"Patient/{DEMO_PATIENT}" and doc["author"] == [{"reference": DOCTOR}]
    # The introspected context binds the token as a JWT's claims would.
    other = httpx.post(service.url + "/v1/dictations", files={"file": ("a.ogg", dictation.audio)},
                       data={"patient": OTHER_PATIENT}, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert other.status_code == 403 and "not the token's patient" in other.json()["detail"]


def test_an_unknown_hs256_token_is_refused(stack, proxy):
    _, service = stack
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InVzZXIvKi4qIn0.c2lnbmF0dXJl"
    response = httpx.get(service.url + "/v1/models", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and "not active (introspection)" in response.json()["detail"]
