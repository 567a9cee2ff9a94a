"""The SMART app with the EHR's own tokens, whatever their shape, in a real browser (Chromium, fake microphone):
for each shape of access token and id_token EHRs issue, and each client type an EHR may register, the whole flow
launch -> banner -> record -> send -> note + AuditEvent in the FHIR server (sekmet-fhir and HAPI). The
authorization server is oidc-provider (tests/oidc) started in that shape; the access token is opaque to the app
and only ever forwarded to the EHR."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from joserfc.jwk import RSAKey

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, OTHER_ENCOUNTER, OTHER_PATIENT
from tests.browser.test_dictation_app import browser, microphone  # noqa: F401 (fixtures)
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.oidc import CLIENT_SECRETS, OidcServer

DOCTOR = "Practitioner/demo-practitioner"
EDIT = " Reviewed by the clinician."


@dataclass(frozen=True)
class Shape:
    name: str
    access_token_shape: str = "jwt"
    id_token_kid: str = "keep"
    client_id: str = "scribe-app"
    client_auth: str = "none"
    trust_issuer: bool = True  # False: the id_token's issuer is known only from the EHR's smart-configuration
    refresh_token_ttl: int | None = None
    extra: dict = field(default_factory=dict)


SHAPES = [
    # What the suite's authorization server always issued: RS384 JWTs with top-level claims; a public client.
    Shape("rs-jwt-public"),
    # Opaque access tokens; a confidential client with client_secret_basic.
    Shape("opaque-basic", access_token_shape="opaque", client_id="scribe-basic", client_auth="client_secret_basic"),
    # As the SMART reference launcher: HS256 access tokens without iss/aud, context nested; id_token without kid
    # in a two-key JWKS; an issuer fhir-scribe knows only from the EHR's discovery; client_secret_post.
    Shape("hs256-nested-kidless-post", access_token_shape="hs256-nested", id_token_kid="omit",
          client_id="scribe-post", client_auth="client_secret_post", trust_issuer=False),
    # A confidential asymmetric client (private_key_jwt), with refresh tokens that expire within a second.
    Shape("rs-jwt-private-key-jwt", client_id="scribe-pkjwt", client_auth="private_key_jwt", refresh_token_ttl=1),
]


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: s.name)
def shaped(request, proxy, tmp_path_factory):
    shape: Shape = request.param
    work = tmp_path_factory.mktemp(shape.name)
    env = {**TEST_LIMITS, "SCRIBE_AUTH__ENABLED": "true", "SCRIBE_FHIR__BASE_URL": proxy.url,
           "SCRIBE_SMART_APP__CLIENT_ID": shape.client_id, "SCRIBE_SMART_APP__CLIENT_AUTH": shape.client_auth,
           "SCRIBE_SMART_APP__SESSION_KEYS": json.dumps([secrets.token_urlsafe(32)])}
    key = None
    if shape.client_auth == "private_key_jwt":
        key = RSAKey.generate_key(2048)
        (work / "app.pem").write_bytes(key.as_pem(private=True))
        env["SCRIBE_SMART_APP__PRIVATE_KEY_PATH"] = str(work / "app.pem")
    elif shape.client_auth != "none":
        env["SCRIBE_SMART_APP__CLIENT_SECRET"] = CLIENT_SECRETS[shape.client_id]
    oidc = OidcServer(fhir_audience=proxy.url, access_token_shape=shape.access_token_shape,
                      id_token_kid=shape.id_token_kid, app_key=key, refresh_token_ttl=shape.refresh_token_ttl).start()
    proxy.faults.smart_configuration = oidc.smart_configuration()
    # Bearer callers of /v1 need a trusted issuer; the app's own EHR need not be one (it comes from discovery).
    trusted = oidc.issuer if shape.trust_issuer else "http://127.0.0.1:9/another-ehr"
    env["SCRIBE_AUTH__ISSUERS"] = json.dumps([{"issuer": trusted, "audiences": [proxy.url]}])
    service = start_server(work / "server.log", **env)
    yield shape, oidc, service
    stop_server(service)
    oidc.stop()


def launch(page, service, oidc, proxy, **context) -> None:
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR,
                            need_patient_banner=True, **context)
    page.goto(f"{service.url}/smart/launch?iss={proxy.url}&launch={launch_id}")
    login(page)
    page.wait_for_url(f"{service.url}/app/")
    page.wait_for_selector("#banner:not([hidden])")
    page.wait_for_selector("#status:has-text('Ready to dictate')")


def login(page) -> None:
    page.fill('input[name="login"]', DOCTOR)  # the authorization server's login and consent pages
    page.fill('input[name="password"]', "any")
    page.click('button[type="submit"]')
    page.click('button[type="submit"]')


def test_launch_banner_record_send(browser, shaped, proxy, fhir_server, tmp_path):  # noqa: F811
    shape, oidc, service = shaped
    page = browser.new_context().new_page()
    launch(page, service, oidc, proxy)
    assert "Alex Testpatient" in page.inner_text("#banner")  # read from the EHR with the user's token
    record(page)
    page.fill("#note-text", page.input_value("#note-text") + EDIT)
    proxy.faults.reset()
    page.click("#send")
    page.wait_for_selector("#status:has-text('Sent to the chart')", timeout=60_000)
    page.screenshot(path=tmp_path / f"sent-{shape.name}.png", full_page=True)
    doc_id = page.inner_text("#status").rsplit("/", 1)[1]
    doc = fhir_server.search("DocumentReference", _id=doc_id)[0]
    assert doc["docStatus"] == "final" and doc["author"] == [{"reference": DOCTOR}]
    assert doc["subject"]["reference"] == f"Patient/{DEMO_PATIENT}"
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode().endswith(EDIT)
    assert len(fhir_server.search("AuditEvent", entity=f"DocumentReference/{doc_id}")) == 1
    # The EHR's access token, whatever its shape, went to the FHIR server with every call of the send.
    sent = [a for a in proxy.faults.authorizations if a]
    assert sent and len(set(sent)) == 1 and sent[0].startswith("Bearer ")

    # A session for patient A cannot write for patient B, whatever the tokens look like.
    csrf = page.request.get(f"{service.url}/smart/session").json()["csrf"]
    other = {"identifier": {"system": "urn:fhir-scribe:dictation", "value": f"other-{secrets.token_hex(6)}"},
             "context": {"patient": OTHER_PATIENT, "encounter": OTHER_ENCOUNTER, "author": DOCTOR,
                         "note_type": "11506-3"},
             "doc_status": "final", "text": "Plan: rest.", "transcript": "Plan: rest.",
             "note": {"text": "Plan: rest.", "sections": [], "findings": []}, "language": "en",
             "audio": {"sha256": "a" * 64, "duration_s": 5, "container": "webm"}, "model": "tiny.en",
             "model_revision": "x", "dictated_at": doc["date"]}
    refused = page.request.post(f"{service.url}/v1/dictations/commit", data=json.dumps(other),
                                headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"})
    assert refused.status == 403, refused.text()
    assert not fhir_server.search("DocumentReference",
                                  identifier=f"urn:fhir-scribe:dictation|{other['identifier']['value']}")

    if shape.name == "rs-jwt-public":  # the error page does not depend on the token shape
        authorization_error_is_a_page(browser, service, oidc, proxy, tmp_path)
    if shape.refresh_token_ttl is not None:
        expired_refresh_ends_the_session_and_keeps_the_note(browser, service, oidc, proxy, tmp_path)


def record(page) -> None:
    page.click("#record")
    page.wait_for_timeout(7000)
    page.click("#stop")
    page.wait_for_selector("#review:not([hidden])", timeout=90_000)


def authorization_error_is_a_page(browser, service, oidc, proxy, tmp_path) -> None:  # noqa: F811
    page = browser.new_context().new_page()
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR)
    started = page.request.get(f"{service.url}/smart/launch?iss={proxy.url}&launch={launch_id}", max_redirects=0)
    authorize = urlsplit(started.headers["location"])
    query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    query["scope"] += " not/a-scope"  # the EHR refuses the request and redirects back with error=invalid_scope
    page.goto(urlunsplit(authorize._replace(query=urlencode(query))))
    page.wait_for_url(f"{service.url}/smart/callback*")
    page.screenshot(path=tmp_path / "authorization-error.png", full_page=True)
    text = page.inner_text("body")
    assert "invalid_scope" in text and "Launch the dictation app again" in text and "administrator" in text


def expired_refresh_ends_the_session_and_keeps_the_note(browser, service, oidc, proxy, tmp_path) -> None:  # noqa: F811
    """Refresh tokens of this shape die within a second; access tokens live 40 s: the page's refresh at ~20 s
    is refused after the clinician has a note to review."""
    page = browser.new_context().new_page()
    launch(page, service, oidc, proxy, access_token_ttl=40)
    record(page)
    note = page.input_value("#note-text")
    page.wait_for_selector("#relaunch:not([hidden])", timeout=40_000)
    page.screenshot(path=tmp_path / "session-ended.png", full_page=True)
    status = page.inner_text("#status")
    assert "session with the EHR has ended" in status and "Ready to dictate" not in status
    assert note and page.input_value("#note-text") == note
    assert "/smart/launch?iss=" in page.get_attribute("#relaunch", "href")
