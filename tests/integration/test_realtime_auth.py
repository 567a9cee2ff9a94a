"""Who may open a live stream (/v1/realtime), and whose chart it listens with: bearer tokens from the real
authorization server (oidc-provider), the SMART app's session cookie with its Origin, and the chart's vocabulary
looked up once per stream within the token's scopes, on both FHIR servers behind a recording proxy."""

import asyncio
import json

import pytest
import websockets

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT
from tests.integration.test_smart_launch import DOCTOR, launch, service  # noqa: F401 (the app-enabled service)
from tests.support.charts import charted_dictations, drugs_heard
from tests.support.realtime import pcm16, replay, ws_url

BASE = "openid fhirUser patient/Patient.r"
CHARTED = next(d for d in charted_dictations() if d.chart["requests"])


@pytest.fixture(scope="module")
def seeded(proxy):
    CHARTED.seed(proxy.url)
    return CHARTED


def refusal(url: str, headers: dict) -> tuple[int, dict]:
    async def probe():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        return refused.value.response

    response = asyncio.run(probe())
    return response.status_code, json.loads(response.body)


def opens(url: str, headers: dict) -> dict:
    async def probe():
        async with websockets.connect(url, additional_headers=headers) as ws:
            return json.loads(await ws.recv())

    return asyncio.run(probe())


def test_bearer_tokens_are_checked_before_the_socket_opens(service, oidc, proxy):
    proxy.faults.reset()
    url = ws_url(service.url)
    status, problem = refusal(url, {})
    assert status == 401 and "token" in problem["detail"].lower()
    status, _ = refusal(url, {"Authorization": "Bearer not-a-token"})
    assert status == 401
    other = oidc.user_token("someone-else", None, DOCTOR, BASE)
    status, problem = refusal(ws_url(service.url, f"intent=transcription&patient={DEMO_PATIENT}"),
                              {"Authorization": f"Bearer {other}"})
    assert status == 403 and "patient" in problem["detail"]
    assert not [s for s in proxy.faults.seen if not s.startswith("POST /AuditEvent")]  # nothing read for them
    good = oidc.user_token(DEMO_PATIENT, DEMO_ENCOUNTER, DOCTOR, BASE)
    assert opens(url, {"Authorization": f"Bearer {good}"})["type"] == "session.created"


def test_the_apps_session_cookie_opens_a_stream_only_from_the_apps_origin(service, oidc, proxy):
    launch_id = oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR)
    cookie, _ = launch(service, oidc, proxy, launch_id)
    url = ws_url(service.url)
    jar = {"Cookie": f"scribe_session={cookie}"}
    status, problem = refusal(url, {**jar, "Origin": "https://evil.example"})
    assert status == 403 and "cross-origin" in problem["detail"]
    status, _ = refusal(url, jar)  # no Origin at all: not the app's page
    assert status == 403
    assert opens(url, {**jar, "Origin": service.url})["type"] == "session.created"
    status, _ = refusal(url, {"Cookie": "scribe_session=forged", "Origin": service.url})
    assert status == 401


def test_the_charts_vocabulary_is_looked_up_once_per_stream_within_the_scopes(service, oidc, proxy, seeded,
                                                                              fhir_server):
    audio = pcm16(seeded.audio)
    url = ws_url(service.url, f"intent=transcription&patient={seeded.patient}")  # names it, as an API client may
    session = {"type": "transcription"}

    def stream(scopes: str):
        token = oidc.user_token(seeded.patient, None, DOCTOR, scopes)
        return replay(url, audio, session=session, headers={"Authorization": f"Bearer {token}"})

    async def both():
        return await asyncio.gather(stream(BASE + " patient/MedicationRequest.rs patient/Medication.rs "
                                           "patient/Condition.rs patient/AllergyIntolerance.rs"), stream(BASE))

    proxy.faults.reset()
    with_chart, without = asyncio.run(both())
    lookups = [s for s in proxy.faults.seen if s.startswith("BATCH / ")]
    assert len(lookups) == 1, proxy.faults.seen  # the scoped stream only, once
    heard = drugs_heard(seeded.drugs, with_chart.completed_text)
    unheard = drugs_heard(seeded.drugs, without.completed_text)
    print(f"\n[{fhir_server.kind}] {seeded.name}: chart drugs heard live {heard}/{len(seeded.drugs)} with the "
          f"chart's vocabulary, {unheard} without")
    assert heard >= unheard and heard >= 1
    log = service.log().lower()
    assert seeded.drugs[0].lower() not in log and seeded.patient not in log
