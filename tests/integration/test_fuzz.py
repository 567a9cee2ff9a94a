"""Property-based fuzzing of the whole API (schemathesis over the service's own /openapi.json), against the real
process over HTTP with authorization ON: a real SMART token (npm oidc-provider), the Subscription endpoint's
secret, the SMART app's session cookie and CSRF token on every request, so generated input gets past the doors;
then smaller passes with no credentials at all and with forged ones (tokens, secrets, session cookies). No 5xx,
every answer within its budget, every 4xx in the documented error format. The checks and the runner are
tests/support/fuzz.py; the number of generated requests is printed (pytest -s) and must reach the floor below."""

import base64
import json
import secrets
import time
from http.cookies import SimpleCookie

import httpx
import pytest
from schemathesis import GenerationMode

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER
from tests.conftest import TEST_LIMITS, SekmetFhir, free_port, start_server, stop_server
from tests.integration import test_bad_requests
from tests.support import fuzz
from tests.support.fault_proxy import FaultProxy
from tests.support.oidc import OidcServer

DOCTOR = f"Practitioner/{DEMO_PRACTITIONER}"
SCOPES = ("openid fhirUser patient/Patient.r patient/Encounter.r patient/DocumentReference.c "
          "patient/MedicationRequest.rs patient/MedicationStatement.rs patient/AllergyIntolerance.rs "
          "patient/Condition.rs")
SECRET = "fuzz-subscription-secret-" + secrets.token_hex(8)
SESSION_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()

# The suite tries at least 500 malformed inputs: the hand-made ones of tests/integration/test_bad_requests.py
# (each bad audio file of tests/support/bad_audio.py, each bad form field, and four more: an unterminated
# multipart body, a declared 1 GiB body, an unknown route, a wrong method), the rest generated here.
HAND_MADE = len(test_bad_requests.AUDIO_CASES) + len(test_bad_requests.REQUEST_CASES) + 4
FLOOR = max(400, 500 - HAND_MADE)

# Generated requests per operation and generation mode (at most: Hypothesis stops where an operation has fewer
# distinct inputs; operations without parameters have one request and nothing to make negative).
EXAMPLES = 100
AUDIO_EXAMPLES = 20  # the upload routes: each request may hold a transcription slot while it is refused
ANONYMOUS_EXAMPLES = 5
FORGED_EXAMPLES = 5
# The commit route takes back the draft the service made; drafts generated from the schema never get past the
# check that their context is the token's, so this many mutations of a real draft are sent too.
COMMIT_MUTATIONS = 150
FORGED_TOKENS = 150  # on one cheap route: every /v1 route reads its token the same way


def authed_examples(path: str, mode: GenerationMode) -> int:
    return AUDIO_EXAMPLES if path in fuzz.AUDIO_ROUTES else EXAMPLES


def anonymous_examples(path: str, mode: GenerationMode) -> int:
    return ANONYMOUS_EXAMPLES


def forged_examples(path: str, mode: GenerationMode) -> int:
    return FORGED_TOKENS if (path, mode) == ("/v1/models", GenerationMode.POSITIVE) else FORGED_EXAMPLES


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """sekmet-fhir behind the recording proxy (the EHR), oidc-provider (its authorization server), and the service
    with auth, the Subscription endpoint and the SMART app all on."""
    started = []
    try:
        fhir = SekmetFhir(tmp_path_factory.mktemp("fuzz-fhir"))
        started.append(fhir.stop)
        proxy = FaultProxy(fhir.base, free_port()).start()
        started.append(proxy.stop)
        oidc = OidcServer(fhir_audience=proxy.url).start()
        started.append(oidc.stop)
        proxy.faults.smart_configuration = oidc.smart_configuration()
        log_path = tmp_path_factory.mktemp("fuzz") / "server.log"
        service = start_server(
            log_path, **TEST_LIMITS, SCRIBE_AUTH__ENABLED="true", SCRIBE_FHIR__BASE_URL=proxy.url,
            SCRIBE_AUTH__ISSUERS=json.dumps([{
                "issuer": oidc.issuer, "audiences": [proxy.url],
                "introspection": {"endpoint": oidc.openid_configuration()["introspection_endpoint"],
                                  "client_id": "scribe-confidential", "client_secret": "scribe-confidential-secret"}}]),
            SCRIBE_SUBSCRIPTIONS__SECRET=SECRET,
            # An empty notification searches for recordings: none match this (no background transcription).
            SCRIBE_SUBSCRIPTIONS__QUERY="DocumentReference?type=urn:test:fhir-scribe|fuzz-no-such-recording",
            # Hundreds of notifications arrive in a minute or two; a full queue (503, redeliver) is not the point.
            SCRIBE_SUBSCRIPTIONS__QUEUE_SIZE="10000",
            SCRIBE_SMART_APP__CLIENT_ID="scribe-app", SCRIBE_SMART_APP__SESSION_KEYS=json.dumps([SESSION_KEY]))
        started.append(lambda: stop_server(service))
        yield service, proxy, oidc
    finally:
        for stop in reversed(started):
            stop()


def set_cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        if name in cookie and cookie[name].value:
            return cookie[name].value
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


def app_session(service, proxy, oidc) -> tuple[str, str]:
    """An EHR launch of the SMART app, as a browser does it: (session cookie, its CSRF token)."""
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR)
    started = httpx.get(service.url + "/smart/launch", params={"iss": proxy.url, "launch": launch_id})
    assert started.status_code == 302, started.text
    callback = oidc.complete_authorization(started.headers["location"], login=DOCTOR)
    launch_cookie = set_cookie(started, "scribe_launch")
    finished = httpx.get(callback, headers={"Cookie": f"scribe_launch={launch_cookie}"})
    assert finished.status_code == 303, finished.text
    cookie = set_cookie(finished, "scribe_session")
    csrf = httpx.get(service.url + "/smart/session", headers={"Cookie": f"scribe_session={cookie}"}).json()["csrf"]
    return cookie, csrf


def refused_without_credentials(case, response) -> None:
    """With no token, no session and no Subscription secret, nothing past the public routes answers but 401."""
    path = case.operation.path
    if response.status_code >= 500:
        return  # reported as a server error already
    if (path.startswith("/v1/") or path.startswith(fuzz.NOTIFY)) and response.status_code != 401:
        raise AssertionError(f"answered {response.status_code} without valid credentials, not 401")


def refused_forged_credentials(case, response) -> None:
    """Forged credentials: 401, or 400 for an ambiguous Authorization header (RFC 6750 invalid_request)."""
    path = case.operation.path
    if response.status_code >= 500:
        return  # reported as a server error already
    if (path.startswith("/v1/") or path.startswith(fuzz.NOTIFY)) and response.status_code not in (400, 401):
        raise AssertionError(f"answered {response.status_code} without valid credentials, not 401")
    if path.startswith("/v1/") and response.status_code == 400 and "invalid_request" not in \
            response.headers.get("www-authenticate", [""])[0]:
        raise AssertionError("answered 400 without valid credentials, not 401")


def real_draft(service, token, dictation) -> dict:
    response = httpx.post(service.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "fuzz-seed-draft"},
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def fresh_identifier(draft, n: int):
    """Each mutated draft its own identifier (unless the mutation is the identifier's), so that one accepted
    commit is not the reason the next is refused (409)."""
    identifier = draft.get("identifier") if isinstance(draft, dict) else None
    if isinstance(identifier, dict) and identifier.get("value") == "fuzz-seed-draft":
        draft = {**draft, "identifier": {**identifier, "value": f"fuzz-commit-{n:04d}"}}
    return draft


def test_fuzz_the_api(stack, dictation):
    service, proxy, oidc = stack
    began = time.monotonic()
    token = oidc.user_token(DEMO_PATIENT, DEMO_ENCOUNTER, DOCTOR, SCOPES)
    cookie, csrf = app_session(service, proxy, oidc)
    raw = fuzz.openapi_document(service.url)
    assert raw["paths"], "the service's schema has no operations"
    schema = fuzz.load(fuzz.with_notification_bodies(raw))
    fuzz.with_hostile_strings(schema, fuzz.json_operations(fuzz.with_notification_bodies(raw)))
    fuzz.register_forged_bearer([oidc.issuer], [proxy.url])
    forged = fuzz.load(fuzz.with_forged_credentials(raw, "X-Scribe-Secret"))
    log = fuzz.ServiceLog(service.log_path)
    tally = fuzz.Tally()

    fuzz.fuzz_operations(
        schema, base_url=service.url, pass_name="token", tally=tally, log=log, examples=authed_examples,
        headers={"Authorization": f"Bearer {token}", "X-Scribe-Secret": SECRET, "X-CSRF-Token": csrf},
        cookies={"scribe_session": cookie})
    fuzz.fuzz_seeded(
        schema["/v1/dictations/commit"]["POST"], real_draft(service, token, dictation), count=COMMIT_MUTATIONS,
        base_url=service.url, pass_name="token", headers={"Authorization": f"Bearer {token}"}, cookies={},
        tally=tally, log=log, prepare=fresh_identifier)
    fuzz.fuzz_operations(
        schema, base_url=service.url, pass_name="anonymous", tally=tally, log=log, examples=anonymous_examples,
        headers={}, cookies={}, extra_check=refused_without_credentials)
    fuzz.fuzz_operations(
        forged, base_url=service.url, pass_name="forged", tally=tally, log=log, examples=forged_examples,
        headers={}, cookies={}, extra_check=refused_forged_credentials)

    print(tally.report())
    print(f"{tally.total} generated requests (floor {FLOOR}; with the {HAND_MADE} hand-made bad inputs: "
          f"{tally.total + HAND_MADE}) in {time.monotonic() - began:.0f} s")
    assert service.process.poll() is None, "the service died"
    assert httpx.get(service.url + "/readyz", timeout=10).status_code == 200
    assert not tally.errors, "\n".join(tally.errors)
    assert not tally.found, tally.report()
    assert tally.total >= FLOOR, f"only {tally.total} generated requests; the floor is {FLOOR}"
