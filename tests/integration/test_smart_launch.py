"""SMART App Launch, server side: EHR launch and standalone against the real authorization server (oidc-provider),
PKCE S256, state, nonce, the sealed session cookie, CSRF, and the page's API calls riding on the session.
The browser itself (the page, the microphone) is tested in tests/browser once the page exists."""

import json
import secrets
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER
from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.waiting import wait_for

DOCTOR = f"Practitioner/{DEMO_PRACTITIONER}"
KEYS = [secrets.token_urlsafe(32), secrets.token_urlsafe(32)]


def start_app_service(log_dir, oidc, proxy, **env):
    """The service with the SMART app on, trusting ``oidc`` for ``proxy``'s audience (+ any other settings)."""
    return start_server(log_dir / "server.log", **TEST_LIMITS,
                        SCRIBE_AUTH__ENABLED="true", SCRIBE_FHIR__BASE_URL=proxy.url,
                        SCRIBE_AUTH__ISSUERS=json.dumps([{"issuer": oidc.issuer, "audiences": [proxy.url]}]),
                        SCRIBE_SMART_APP__CLIENT_ID="scribe-app", SCRIBE_SMART_APP__SESSION_KEYS=json.dumps(KEYS),
                        SCRIBE_AUTH__LEEWAY_S="1", **env)  # so a short token is refused soon after it expires


@pytest.fixture(scope="module")
def service(tmp_path_factory, oidc, proxy):
    running = start_app_service(tmp_path_factory.mktemp("smart"), oidc, proxy)
    yield running
    stop_server(running)


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


def launch(service, oidc, proxy, launch_id: str | None) -> tuple[str, dict]:
    params = {"iss": proxy.url, **({"launch": launch_id} if launch_id else {})}
    started = httpx.get(service.url + "/smart/launch", params=params)
    assert started.status_code == 302, started.text
    authorize = started.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    launch_cookie = set_cookies(started)["scribe_launch"]["scribe_launch"]
    assert launch_cookie["httponly"] and launch_cookie["secure"] and launch_cookie["samesite"].lower() == "lax"
    callback = oidc.complete_authorization(authorize, login=DOCTOR)
    assert callback.startswith(service.url + "/smart/callback?")
    finished = httpx.get(callback, headers={"Cookie": f"scribe_launch={launch_cookie.value}"})
    assert finished.status_code == 303 and finished.headers["location"] == "/app/", finished.text
    session_cookie = set_cookies(finished)["scribe_session"]["scribe_session"]
    assert session_cookie["httponly"] and session_cookie["secure"] and session_cookie["samesite"].lower() == "lax"
    return session_cookie.value, query


def test_ehr_launch_then_dictate_review_and_send(service, oidc, proxy, fhir_server, dictation):
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR,
                            need_patient_banner=True, smart_style_url="https://ehr.example/style.json")
    cookie, query = launch(service, oidc, proxy, launch_id)
    assert query["code_challenge_method"] == ["S256"] and query["aud"] == [proxy.url]
    assert query["launch"] == [launch_id] and len(query["state"][0]) >= 40 and query["nonce"]
    assert "launch" in query["scope"][0].split() and "patient/DocumentReference.c" in query["scope"][0].split()

    jar = {"Cookie": f"scribe_session={cookie}"}
    context = httpx.get(service.url + "/smart/session", headers=jar).json()
    assert (context["patient"], context["encounter"], context["fhir_user"]) == (DEMO_PATIENT, DEMO_ENCOUNTER, DOCTOR)
    assert context["need_patient_banner"] is True and context["smart_style_url"].endswith("style.json")
    assert "access_token" not in json.dumps(context) and "refresh_token" not in json.dumps(context)

    csrf = {**jar, "X-CSRF-Token": context["csrf"], "Origin": service.url}
    draft = httpx.post(service.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                       headers={**csrf, "Idempotency-Key": f"app-{secrets.token_hex(8)}"}, timeout=120)
    assert draft.status_code == 200, draft.text
    body = draft.json()
    assert body["context"] == {"patient": DEMO_PATIENT, "encounter": DEMO_ENCOUNTER, "author": DOCTOR,
                               "note_type": "11506-3"}
    body["text"] = body["text"].replace("14 milligrams", "40 milligrams")  # the clinician fixes the dose
    sent = httpx.post(service.url + "/v1/dictations/commit", json=body, headers=csrf, timeout=60)
    assert sent.status_code == 201, sent.text
    doc = fhir_server.search("DocumentReference", _id=sent.json()["document_reference_id"])[0]
    assert doc["docStatus"] == "final" and doc["author"] == [{"reference": DOCTOR}]
    import base64

    assert "40 milligrams" in base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()

    assert httpx.post(service.url + "/smart/logout", headers=csrf).status_code == 204


def test_standalone_launch_asks_for_a_patient(service, oidc, proxy):
    oidc.launch(patient=DEMO_PATIENT, encounter=None, fhir_user=DOCTOR)  # the AS's patient picker, scripted
    cookie, query = launch(service, oidc, proxy, None)
    assert "launch/patient" in query["scope"][0].split() and "launch" not in query
    context = httpx.get(service.url + "/smart/session", headers={"Cookie": f"scribe_session={cookie}"}).json()
    assert context["patient"] == DEMO_PATIENT


def test_state_changing_requests_need_the_csrf_token_and_same_origin(service, oidc, proxy, dictation):
    cookie, _ = launch(service, oidc, proxy, oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER,
                                                         fhir_user=DOCTOR))
    jar = {"Cookie": f"scribe_session={cookie}"}
    csrf = httpx.get(service.url + "/smart/session", headers=jar).json()["csrf"]
    proxy.faults.reset()
    url = service.url + "/v1/dictations/draft"
    files = {"file": ("a.ogg", dictation.audio)}
    no_token = httpx.post(url, files=files, headers=jar, timeout=60)
    assert no_token.status_code == 403 and "X-CSRF-Token" in no_token.json()["detail"]
    other_site = httpx.post(url, files=files, headers={**jar, "X-CSRF-Token": csrf, "Origin": "https://evil.example"},
                            timeout=60)
    assert other_site.status_code == 403 and "cross-origin" in other_site.json()["detail"]
    assert proxy.faults.seen == []


def test_the_session_outlives_its_access_token_by_refreshing(service, oidc, proxy):
    ttl = 8  # long enough that a busy machine still uses the token once before it expires
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR, access_token_ttl=ttl)
    launched_at = time.time()
    cookie, query = launch(service, oidc, proxy, launch_id)
    assert "online_access" in query["scope"][0].split()
    jar = {"Cookie": f"scribe_session={cookie}"}
    context = httpx.get(service.url + "/smart/session", headers=jar).json()
    assert context["refreshable"] is True and context["expires_at"] - time.time() <= ttl
    csrf = {**jar, "X-CSRF-Token": context["csrf"], "Origin": service.url}
    text = {"text": "Assessment. Stable."}
    assert httpx.post(service.url + "/v1/sections", json=text, headers=csrf).status_code == 200
    # The access token expires (plus the 1 s leeway) and the session's calls are refused: polled, not slept.
    expired = wait_for(lambda: (r := httpx.post(service.url + "/v1/sections", json=text, headers=csrf,
                                                timeout=30)).status_code != 200 and r,
                       timeout=ttl + 60, interval=0.25, what=f"the {ttl} s access token to be refused")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    refreshed = httpx.post(service.url + "/smart/refresh", headers=csrf)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["expires_at"] > context["expires_at"] + 4
    renewed = set_cookies(refreshed)["scribe_session"]["scribe_session"]
    # smart_app.session_max_s counts from the launch: refreshing does not extend it (the token's ttl has passed).
    assert 43200 - (time.time() - launched_at) - 2 <= int(renewed["max-age"]) <= 43200 - ttl
    assert renewed["httponly"]
    again = {**csrf, "Cookie": f"scribe_session={renewed.value}"}
    assert httpx.post(service.url + "/v1/sections", json=text, headers=again).status_code == 200
    assert httpx.get(service.url + "/smart/session", headers=again).json()["patient"] == DEMO_PATIENT
    assert httpx.post(service.url + "/smart/refresh", headers=jar).status_code == 403  # CSRF applies


def test_smart_style_url_becomes_the_pages_css_variables(service, oidc, proxy):
    def stylesheet_for(style_url: str) -> str:
        launch_id = oidc.launch(patient=DEMO_PATIENT, fhir_user=DOCTOR, smart_style_url=style_url)
        cookie, _ = launch(service, oidc, proxy, launch_id)
        response = httpx.get(service.url + "/smart/style.css", headers={"Cookie": f"scribe_session={cookie}"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
        return response.text

    css = stylesheet_for(oidc.issuer + "/test/style.json")
    assert "--bg: #fdf6e3;" in css and "--accent: #6c71c4;" in css and "--font-body: Georgia, serif;" in css
    assert "display" not in css and "evil" not in css  # unknown keys never reach the page
    assert stylesheet_for("http://192.0.2.1/style.json") == ""  # not the EHR's host: not even fetched
    assert httpx.get(service.url + "/smart/style.css").text == ""  # no session: the page's own look


@pytest.mark.parametrize("params, fragment", [
    ({"iss": "https://evil.example/fhir", "launch": "x"}, "unknown FHIR server"),
])
def test_launch_from_an_unknown_ehr_is_refused(service, params, fragment):
    response = httpx.get(service.url + "/smart/launch", params=params)
    assert response.status_code == 400 and fragment in response.json()["detail"]
    assert "location" not in response.headers


def test_callback_checks(service, oidc, proxy):
    started = httpx.get(service.url + "/smart/launch", params={"iss": proxy.url, "launch": oidc.launch(
        patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR)})
    cookie = set_cookies(started)["scribe_launch"]["scribe_launch"].value
    callback = oidc.complete_authorization(started.headers["location"], login=DOCTOR)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    wrong_state = httpx.get(service.url + "/smart/callback", params={"code": code, "state": "forged"},
                            headers={"Cookie": f"scribe_launch={cookie}"})
    assert wrong_state.status_code == 400 and "state does not match" in wrong_state.json()["detail"]
    no_cookie = httpx.get(callback)
    assert no_cookie.status_code == 400 and "no launch in progress" in no_cookie.json()["detail"]
    denied = httpx.get(service.url + "/smart/callback", params={"error": "access_denied"},
                       headers={"Cookie": f"scribe_launch={cookie}"})
    assert denied.status_code == 400 and "access_denied" in denied.json()["detail"]


def test_a_forged_or_stale_session_cookie_is_refused(service):
    for value in ("forged", KEYS[0]):
        response = httpx.get(service.url + "/smart/session", headers={"Cookie": f"scribe_session={value}"})
        assert response.status_code == 401 and "launch the app again" in response.json()["detail"]


def test_the_host_header_never_chooses_where_the_ehr_sends_codes(service, oidc, proxy):
    started = httpx.get(service.url + "/smart/launch", headers={"Host": "evil.example"},
                        params={"iss": proxy.url, "launch": oidc.launch(patient=DEMO_PATIENT, fhir_user=DOCTOR)})
    assert started.status_code == 302, started.text
    redirect_uri = parse_qs(urlsplit(started.headers["location"]).query)["redirect_uri"][0]
    assert redirect_uri == service.url + "/smart/callback"


def test_a_cross_origin_request_with_a_forged_host_is_refused(service, oidc, proxy):
    cookie, _ = launch(service, oidc, proxy, oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER,
                                                          fhir_user=DOCTOR))
    csrf = httpx.get(service.url + "/smart/session", headers={"Cookie": f"scribe_session={cookie}"}).json()["csrf"]
    forged = httpx.post(service.url + "/v1/sections", json={"text": "Plan: rest."},
                        headers={"Cookie": f"scribe_session={cookie}", "X-CSRF-Token": csrf,
                                 "Origin": "http://evil.example", "Host": "evil.example"})
    assert forged.status_code == 403 and "cross-origin" in forged.json()["detail"]


@pytest.mark.parametrize("error", ["<script>alert(1)</script>", "access_denied\" onload=\"x"])
def test_callback_errors_are_not_echoed(service, error):
    response = httpx.get(service.url + "/smart/callback",
                         params={"error": error, "error_description": "<img src=x onerror=alert(1)>"})
    assert response.status_code == 400
    assert "<" not in response.text and "onload" not in response.text and "onerror" not in response.text


def test_the_page_may_be_framed_only_by_the_configured_ancestors(service):
    for path in ("/app/", "/app/static/app.js"):
        csp = httpx.get(service.url + path).headers["content-security-policy"]
        assert "frame-ancestors 'self'" in csp, csp


@pytest.mark.parametrize("path, params", [
    ("/smart/callback", {"error": "access_denied"}),
    ("/smart/callback", {"code": "x", "state": "y"}),  # no launch in progress in this browser
    ("/smart/launch", {"iss": "https://evil.example/fhir"}),
    ("/smart/launch", {}),
])
def test_a_browser_gets_a_page_saying_what_to_do(service, path, params):
    page = httpx.get(service.url + path, params=params, headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code in (400, 422) and page.headers["content-type"].startswith("text/html")
    assert "Launch the dictation app again" in page.text or "Launch the app again" in page.text
    assert page.headers["x-request-id"] in page.text and "frame-ancestors" not in page.text
    api = httpx.get(service.url + path, params=params)  # an API client keeps problem+json
    assert api.headers["content-type"].startswith("application/problem+json")
