"""The SMART dictation app in a real browser (Debian's Chromium driven by Playwright), with a fake microphone
playing a speech fixture: EHR launch -> login and consent at the authorization server -> the page shows the
patient -> record -> transcript appears as headed sections -> the clinician edits -> send -> the note is in the
FHIR server; and the failure path: the FHIR server down at send time, the draft stays, retry succeeds once.
Screenshots of each screen are saved under the test's temporary directory (path printed)."""

import base64
import shutil
import subprocess
import time

import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT
from tests.integration.test_smart_launch import DOCTOR, service  # noqa: F401 (the app-enabled service fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EDIT = " Addendum by the clinician: atorvastatin 40 milligrams."


@pytest.fixture(scope="module")
def microphone(tmp_path_factory, dictation):
    """The first 14 s of a dictation (chief complaint and HPI), as the WAV Chromium's fake device plays."""
    wav = tmp_path_factory.mktemp("mic") / "dictation.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(dictation.path), "-t", "14",
                    "-ar", "48000", "-ac", "1", str(wav)], check=True)
    return wav


@pytest.fixture(scope="module")
def browser(microphone):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone}"])
        yield chromium
        chromium.close()


def launch_app(page, service, oidc, proxy, shots, **launch):
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR,
                            need_patient_banner=True, **launch)
    page.goto(f"{service.url}/smart/launch?iss={proxy.url}&launch={launch_id}")
    page.fill('input[name="login"]', DOCTOR)  # the authorization server's login page
    page.fill('input[name="password"]', "any")
    page.click('button[type="submit"]')
    page.click('button[type="submit"]')  # its consent page
    page.wait_for_url(f"{service.url}/app/")
    page.wait_for_selector("#banner:not([hidden])")
    page.wait_for_selector("#status:has-text('Ready to dictate')")  # selectors: the page's CSP forbids eval
    page.screenshot(path=shots / "1-launched.png", full_page=True)


def dictate(page, shots):
    page.click("#record")
    started = time.monotonic()
    # The live transcript appears while the clinician is still speaking (provisional, from pieces cut at pauses).
    page.wait_for_selector("#live.provisional:has-text('chest pain')", timeout=14_000)
    assert page.is_enabled("#stop") and page.is_disabled("#record")
    page.screenshot(path=shots / "2-recording.png", full_page=True)
    page.wait_for_timeout(max(0.0, 15 - (time.monotonic() - started)) * 1000)
    page.click("#stop")
    page.wait_for_selector("#review:not([hidden])", timeout=90_000)
    page.screenshot(path=shots / "3-review.png", full_page=True)


def test_launch_record_review_send(browser, service, oidc, proxy, fhir_server, tmp_path):
    """Also: the EHR's style is applied, and access tokens living 10 s are renewed by the page all along."""
    page = browser.new_context().new_page()
    launch_app(page, service, oidc, proxy, tmp_path, access_token_ttl=10,
               smart_style_url=oidc.issuer + "/test/style.json")
    assert page.locator("body").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(253, 246, 227)"
    banner = page.inner_text("#banner")
    assert "Alex Testpatient" in banner and "1968-04-02" in banner and "MRN-0001" in banner
    dictate(page, tmp_path)
    live = page.inner_text("#live").lower()
    assert "chief complaint" in live and "chest pain" in live
    assert page.locator("#live h3").count() >= 2  # headed sections as headings were recognised
    assert "chart lists no active medications" in page.inner_text("#vocabulary")  # the demo patient has none
    page.fill("#note-text", page.input_value("#note-text") + EDIT)
    page.click("#send")
    page.wait_for_selector("#status:has-text('Sent to the chart')", timeout=60_000)
    page.screenshot(path=tmp_path / "4-sent.png", full_page=True)
    print(f"screenshots: {tmp_path}")
    doc_id = page.inner_text("#status").rsplit("/", 1)[1]
    doc = fhir_server.search("DocumentReference", _id=doc_id)[0]
    assert doc["docStatus"] == "final" and doc["author"] == [{"reference": DOCTOR}]
    assert doc["subject"]["reference"] == f"Patient/{DEMO_PATIENT}"
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{DEMO_ENCOUNTER}"}]
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode().endswith(EDIT)
    audits = fhir_server.search("AuditEvent", entity=f"DocumentReference/{doc_id}")
    assert len(audits) == 1


def test_send_fails_keeps_the_draft_then_retry_succeeds_once(browser, service, oidc, proxy, fhir_server, tmp_path):
    page = browser.new_context().new_page()
    launch_app(page, service, oidc, proxy, tmp_path)
    dictate(page, tmp_path)
    page.fill("#note-text", page.input_value("#note-text") + EDIT)
    proxy.faults.fail_next, proxy.faults.status = 100, 503  # the chart is unreachable when the clinician sends
    page.click("#send")
    page.wait_for_selector("#retry:not([hidden])", timeout=60_000)
    assert "FHIR server" in page.inner_text("#error")
    assert page.input_value("#note-text").endswith(EDIT)  # nothing typed is lost
    page.screenshot(path=tmp_path / "5-send-failed.png", full_page=True)
    proxy.faults.reset()
    page.click("#retry")
    page.wait_for_selector("#status:has-text('Sent to the chart')", timeout=60_000)
    doc_id = page.inner_text("#status").rsplit("/", 1)[1]
    identifier = fhir_server.search("DocumentReference", _id=doc_id)[0]["identifier"][0]
    assert len(fhir_server.search("DocumentReference",
                                  identifier=f"{identifier['system']}|{identifier['value']}")) == 1
    print(f"screenshots: {tmp_path}")


def test_readable_at_200_percent_zoom_and_keyboard_reachable(browser, service, oidc, proxy, tmp_path):
    """At 200% zoom (a 1280 px window showing 640 CSS px) nothing needs horizontal scrolling, every control has
    a label, and Tab reaches the recorder."""
    page = browser.new_context(viewport={"width": 640, "height": 900}, device_scale_factor=2).new_page()
    launch_app(page, service, oidc, proxy, tmp_path)
    page.screenshot(path=tmp_path / "6-zoom-200.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    for control in ("note-type", "level", "upload", "note-text"):
        assert page.locator(f"label[for='{control}']").count() == 1
    focused = []
    for _ in range(4):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert "note-type" in focused and "record" in focused
    print(f"screenshots: {tmp_path}")
