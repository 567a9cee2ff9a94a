"""TLS, served directly and behind a TLS-terminating proxy, with a certificate made in the test
(tests/support/tls.py) and real processes only: the service (`python -m service serve`), nginx
(tests/support/nginx.py), the test authorization server and the FHIR servers.

Directly (server.tls_certfile / server.tls_keyfile): TLS 1.2 and 1.3 are served, verified against the test CA;
TLS 1.1 is refused in the handshake; plain HTTP on that port gets no answer; a transcription works over HTTPS; one
file without the other stops start-up, naming both settings.

Behind nginx (server.forwarded_allow_ips = 127.0.0.1, smart_app.public_url = the proxy's https URL): the SMART launch
sends the EHR https://<proxy>/smart/callback as redirect_uri, completes through the proxy with Secure cookies,
dictates and writes a note through it; the app's CSRF check wants the proxy's https origin. The service believes
X-Forwarded-Proto from the configured proxies only: via nginx, URLs the framework builds from the request are
https; the same headers sent straight to a service that does not list the sender change nothing.

(X-Forwarded-For is trusted under the same rule, but the service uses the client address nowhere: neither the
access log nor any AuditEvent holds it, so no test can observe it.)

Two service defects found here are fixed and tested: a certificate that cannot be loaded was a traceback after the
model loaded, and served directly over HTTPS the default smart_app.public_url was still http://.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER
from tests.conftest import NO_AUTH, REPO, TEST_LIMITS, RunningServer, free_port, start_server, stop_server
from tests.support.nginx import Nginx
from tests.support.oidc import OidcServer
from tests.support.tls import Pki, make_pki
from tests.support.wer import wer

TLS = ssl.TLSVersion
DOCTOR = f"Practitioner/{DEMO_PRACTITIONER}"
KEYS = [secrets.token_urlsafe(32)]
APP_CLIENT = "scribe-web"  # the app's registration at the authorization server, with its https redirect URI


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def start_https_server(log_path: Path, pki: Pki, timeout_s: float = 90, **env: str) -> RunningServer:
    """conftest.start_server, served over HTTPS: ready once GET /readyz answers 200 over TLS (verified)."""
    port = free_port()
    environment = {**os.environ, **NO_AUTH, **env, "SCRIBE_SERVER__PORT": str(port),
                   "SCRIBE_SERVER__TLS_CERTFILE": str(pki.certfile), "SCRIBE_SERVER__TLS_KEYFILE": str(pki.keyfile)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=environment,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    with httpx.Client(verify=pki.client_context(), timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return RunningServer(url, process, log_path)
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the service did not answer {url}/readyz within {timeout_s:g} s:\n{log_path.read_text()}")


def tls_version(response: httpx.Response) -> str:
    """The protocol version of the connection `response` came on (before its client is closed)."""
    return response.extensions["network_stream"].get_extra_info("ssl_object").version()


# ---- served directly ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_service(tmp_path_factory, pki):
    metrics_port = free_port()
    running = start_https_server(tmp_path_factory.mktemp("https") / "server.log", pki, **TEST_LIMITS,
                                 SCRIBE_SERVER__METRICS_PORT=str(metrics_port))
    running.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"  # type: ignore[attr-defined]
    yield running
    stop_server(running)


@pytest.mark.parametrize("version", [TLS.TLSv1_2, TLS.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_https_is_served_with_tls_1_2_and_1_3(https_service, pki, version):
    with httpx.Client(verify=pki.client_context(minimum=version, maximum=version), timeout=10) as client:
        response = client.get(https_service.url + "/readyz")
        negotiated = tls_version(response)  # while the connection is open
    assert response.status_code == 200 and response.json()["status"] == "ready"
    assert negotiated == {TLS.TLSv1_2: "TLSv1.2", TLS.TLSv1_3: "TLSv1.3"}[version]


def test_the_certificate_is_checked_by_clients(https_service, pki):
    """The test CA is what makes the connection trusted: a client without it refuses the service."""
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_service.url + "/readyz", verify=ssl.create_default_context(), timeout=10)
    with httpx.Client(verify=pki.client_context(), timeout=10) as client:  # the SAN DNS name works as well
        assert client.get(https_service.url.replace("127.0.0.1", "localhost") + "/readyz").status_code == 200


def _tls_1_1_client(pki: Pki) -> ssl.SSLContext:
    # OpenSSL 3 at the default security level will not even offer TLS 1.1: level 0 lets this client speak it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "ssl.TLSVersion.TLSv1_1 is deprecated": the point
        return pki.client_context(minimum=TLS.TLSv1_1, maximum=TLS.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")


# How a refused TLS 1.1 handshake ends for the client: nginx answers with a protocol_version alert; the service
# (Python's asyncio SSL) closes the connection without sending its alert, seen as an EOF inside the handshake.
REFUSED_HANDSHAKE = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNEXPECTED_EOF_WHILE_READING"}


def _tls_1_1_handshake_error(port: int, pki: Pki) -> ssl.SSLError:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with _tls_1_1_client(pki).wrap_socket(raw, server_hostname="127.0.0.1") as connected:
                raise AssertionError(f"a TLS 1.1 client was served with {connected.version()}")
        except ssl.SSLError as refused:
            return refused


def test_the_tls_1_1_client_really_offers_tls_1_1(pki):
    """Control for the refusal below: against a server that still allows TLS 1.1 (in memory, same certificate),
    this client completes a TLS 1.1 handshake, so a refusal by the service is the service's doing."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_context.minimum_version = TLS.TLSv1_1
    server_context.load_cert_chain(pki.certfile, pki.keyfile)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = _tls_1_1_client(pki).wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end, outgoing, incoming in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            break
    assert all(done.values()) and client.version() == "TLSv1.1"


def test_tls_1_1_is_refused_in_the_handshake(https_service, pki):
    refused = _tls_1_1_handshake_error(urlsplit(https_service.url).port, pki)
    assert refused.reason in REFUSED_HANDSHAKE, refused
    with pytest.raises(httpx.ConnectError):
        httpx.get(https_service.url + "/readyz", verify=_tls_1_1_client(pki), timeout=10)
    # The refusal is about the version only: the same port goes on serving TLS 1.2.
    with httpx.Client(verify=pki.client_context(maximum=TLS.TLSv1_2), timeout=10) as client:
        assert client.get(https_service.url + "/readyz").status_code == 200


def test_plain_http_to_the_tls_port_gets_no_answer(https_service):
    with pytest.raises(httpx.TransportError):
        httpx.get(https_service.url.replace("https://", "http://") + "/readyz", timeout=10)


def test_a_transcription_over_https(https_service, pki, dictation):
    with httpx.Client(verify=pki.client_context(), timeout=120) as client:
        response = client.post(https_service.url + "/v1/audio/transcriptions", data={"model": "whisper-1"},
                               files={"file": ("a.ogg", dictation.audio, "audio/ogg")})
    assert response.status_code == 200, response.text
    assert wer(dictation.reference, response.json()["text"]) < 0.2


def test_the_metrics_port_stays_plain_http(https_service):
    response = httpx.get(https_service.metrics_url, timeout=10)
    assert response.status_code == 200 and "http_request" in response.text


@pytest.mark.parametrize("only", ["TLS_CERTFILE", "TLS_KEYFILE"])
def test_one_tls_file_without_the_other_stops_start_up(pki, only):
    path = pki.certfile if only == "TLS_CERTFILE" else pki.keyfile
    environment = {**os.environ, **NO_AUTH, "SCRIBE_SERVER__PORT": str(free_port()),
                   f"SCRIBE_SERVER__{only}": str(path)}
    environment.pop("SCRIBE_SERVER__TLS_CERTFILE" if only == "TLS_KEYFILE" else "SCRIBE_SERVER__TLS_KEYFILE", None)
    finished = subprocess.run([sys.executable, "-m", "service", "serve"], cwd=REPO, env=environment,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "tls_certfile" in finished.stderr and "tls_keyfile" in finished.stderr, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize("problem", ["missing", "mismatched"])
def test_a_certificate_that_cannot_be_loaded_stops_start_up_naming_the_setting(tmp_path, pki, problem):
    if problem == "missing":
        certfile, keyfile = tmp_path / "no-such-cert.pem", tmp_path / "no-such-key.pem"
    else:  # a key that is not the certificate's
        certfile, keyfile = pki.certfile, make_pki(tmp_path / "other").keyfile
    environment = {**os.environ, **NO_AUTH, "SCRIBE_SERVER__PORT": str(free_port()),
                   "SCRIBE_SERVER__TLS_CERTFILE": str(certfile), "SCRIBE_SERVER__TLS_KEYFILE": str(keyfile)}
    finished = subprocess.run([sys.executable, "-m", "service", "serve"], cwd=REPO, env=environment,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "SCRIBE_SERVER__TLS_" in finished.stderr and "Traceback" not in finished.stderr, finished.stderr[-2000:]


# ---- forwarded headers: believed from the configured proxies only -----------------------------------------------


def _slash_redirect(url: str, **headers: str) -> str:
    """GET /app (no slash): the framework answers 307 to /app/, a URL it builds from the request (scheme
    included), which is where a believed X-Forwarded-Proto shows."""
    response = httpx.get(url + "/app", headers=headers, timeout=10)
    assert response.status_code == 307, response.text
    return response.headers["location"]


SPOOFED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


@pytest.mark.parametrize("allowed", ["", "192.0.2.1"], ids=["no-proxy-trusted", "another-proxy-trusted"])
def test_spoofed_forwarded_headers_from_an_untrusted_sender_are_ignored(tmp_path, allowed):
    running = start_server(tmp_path / "server.log", SCRIBE_SERVER__FORWARDED_ALLOW_IPS=allowed)
    try:
        assert _slash_redirect(running.url, **SPOOFED) == running.url + "/app/"  # still http://
    finally:
        stop_server(running)


def test_a_spoofed_downgrade_is_ignored_by_the_https_service(https_service, pki):
    response = httpx.get(https_service.url + "/app", headers={"X-Forwarded-Proto": "http"},
                         verify=pki.client_context(), timeout=10)
    assert response.status_code == 307 and response.headers["location"] == https_service.url + "/app/"


# ---- behind nginx ---------------------------------------------------------------------------------------------------


def _oidc_with_https_redirect(redirect_uri: str, fhir_audience: str) -> OidcServer:
    """The test authorization server with APP_CLIENT registered for `redirect_uri` (https, exactly)."""
    return OidcServer(fhir_audience=fhir_audience, web_redirect_uri=redirect_uri).start()


@dataclass
class Edge:
    url: str  # https://127.0.0.1:<nginx port>: where browsers reach the app (smart_app.public_url)
    nginx: Nginx
    service: RunningServer  # plain http on 127.0.0.1, trusting 127.0.0.1 (nginx) for forwarded headers
    oidc: OidcServer
    pki: Pki

    def browser(self) -> httpx.Client:
        """A client as a browser is: trusts the CA, keeps cookies (Secure ones only go over https)."""
        return httpx.Client(verify=self.pki.client_context(), timeout=120, follow_redirects=False)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, pki, proxy):
    work = tmp_path_factory.mktemp("edge")
    port = free_port()
    public_url = f"https://127.0.0.1:{port}"
    oidc = _oidc_with_https_redirect(public_url + "/smart/callback", fhir_audience=proxy.url)
    proxy.faults.smart_configuration = oidc.smart_configuration()  # the EHR advertises its AS
    service = nginx = None
    try:
        service = start_server(work / "server.log", **TEST_LIMITS, SCRIBE_AUTH__ENABLED="true",
                               SCRIBE_FHIR__BASE_URL=proxy.url,
                               SCRIBE_AUTH__ISSUERS=json.dumps([{"issuer": oidc.issuer, "audiences": [proxy.url]}]),
                               SCRIBE_SMART_APP__CLIENT_ID=APP_CLIENT,
                               SCRIBE_SMART_APP__SESSION_KEYS=json.dumps(KEYS),
                               SCRIBE_SMART_APP__PUBLIC_URL=public_url,
                               SCRIBE_SERVER__FORWARDED_ALLOW_IPS="127.0.0.1")
        nginx = Nginx(service.url, pki.certfile, pki.keyfile, work / "nginx", port=port).start()
        yield Edge(public_url, nginx, service, oidc, pki)
    finally:
        if nginx is not None:
            nginx.stop()
        if service is not None:
            stop_server(service)
        oidc.stop()


def _launch(edge: Edge, browser: httpx.Client, proxy) -> dict:
    """EHR launch through nginx; returns the authorize request's query. The browser ends with the app session."""
    launch_id = edge.oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR)
    started = browser.get(edge.url + "/smart/launch", params={"iss": proxy.url, "launch": launch_id})
    assert started.status_code == 302, started.text
    authorize = started.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    callback = edge.oidc.complete_authorization(authorize, login=DOCTOR)
    assert callback.startswith(edge.url + "/smart/callback?"), callback
    finished = browser.get(callback)  # the launch cookie (Secure, path /smart/callback) rides along over https
    assert finished.status_code == 303 and finished.headers["location"] == "/app/", finished.text
    return query


def test_smart_launch_behind_the_proxy_uses_the_public_https_url(edge, proxy, fhir_server, dictation):
    with edge.browser() as browser:
        query = _launch(edge, browser, proxy)
        assert query["redirect_uri"] == [edge.url + "/smart/callback"] and query["client_id"] == [APP_CLIENT]
        session_cookie = next(c for c in browser.cookies.jar if c.name == "scribe_session")
        assert session_cookie.secure and session_cookie.domain.startswith("127.0.0.1")

        context = browser.get(edge.url + "/smart/session")
        assert context.status_code == 200, context.text
        assert (context.json()["patient"], context.json()["fhir_user"]) == (DEMO_PATIENT, DOCTOR)
        csrf = {"X-CSRF-Token": context.json()["csrf"], "Origin": edge.url}

        # The page's own requests: same origin as public_url (the proxy's), through the proxy.
        text = {"text": "Assessment. Stable angina. Plan. Continue aspirin."}
        assert browser.post(edge.url + "/v1/sections", json=text, headers=csrf).status_code == 200
        # Record, review, send: the audio goes up through nginx, the note is written in the EHR.
        draft = browser.post(edge.url + "/v1/dictations/draft", files={"file": ("a.ogg", dictation.audio)},
                             headers={**csrf, "Idempotency-Key": f"tls-{secrets.token_hex(8)}"})
        assert draft.status_code == 200, draft.text
        sent = browser.post(edge.url + "/v1/dictations/commit", json=draft.json(), headers=csrf, timeout=60)
        assert sent.status_code == 201, sent.text
        doc = fhir_server.search("DocumentReference", _id=sent.json()["document_reference_id"])[0]
        assert doc["docStatus"] == "final" and doc["author"] == [{"reference": DOCTOR}]
        assert "chest pain" in base64.b64decode(doc["content"][0]["attachment"]["data"]).decode().lower()


def test_csrf_origin_behind_the_proxy_is_the_public_https_origin(edge, proxy, fhir_server):
    text = {"text": "Plan: rest."}
    with edge.browser() as browser:
        _launch(edge, browser, proxy)
        token = browser.get(edge.url + "/smart/session").json()["csrf"]
        internal = edge.service.url  # http://127.0.0.1:<service port>: not where browsers are
        for origin in (internal, edge.url.replace("https://", "http://"), "https://evil.example"):
            refused = browser.post(edge.url + "/v1/sections", json=text,
                                   headers={"X-CSRF-Token": token, "Origin": origin})
            assert refused.status_code == 403 and "cross-origin" in refused.json()["detail"], origin
        accepted = browser.post(edge.url + "/v1/sections", json=text,
                                headers={"X-CSRF-Token": token, "Origin": edge.url})
        assert accepted.status_code == 200, accepted.text

        # Sent straight to the service, with the cookie and its own origin: still not the public origin.
        cookie = browser.cookies.get("scribe_session")
        direct = httpx.post(internal + "/v1/sections", json=text, timeout=10,
                            headers={"Cookie": f"scribe_session={cookie}", "X-CSRF-Token": token, "Origin": internal})
        assert direct.status_code == 403 and "cross-origin" in direct.json()["detail"]
        # A browser never sends the Secure session cookie over plain http, so the app is not signed in there.
        plain = browser.get(internal + "/smart/session")
        assert plain.status_code == 401, plain.text


def test_forwarded_proto_from_the_proxy_is_believed(edge, proxy, fhir_server):
    with edge.browser() as browser:
        via_proxy = browser.get(edge.url + "/app", headers={"X-Forwarded-Proto": "http"})  # nginx overwrites it
        assert via_proxy.status_code == 307 and via_proxy.headers["location"] == edge.url + "/app/"
        page = browser.get(edge.url + "/app/")
        assert page.status_code == 200 and "frame-ancestors" in page.headers["content-security-policy"]
    # Straight to the service from 127.0.0.1, a trusted address: no header, plain http; the header, believed.
    assert _slash_redirect(edge.service.url) == edge.service.url + "/app/"
    assert _slash_redirect(edge.service.url, **SPOOFED) == edge.service.url.replace("http://", "https://") + "/app/"
    assert any('"GET /app HTTP/1.1" 307' in line for line in edge.nginx.access_log())


def test_the_proxy_speaks_tls_1_2_and_newer_only(edge, pki, fhir_server):
    for version, name in ((TLS.TLSv1_2, "TLSv1.2"), (TLS.TLSv1_3, "TLSv1.3")):
        with httpx.Client(verify=pki.client_context(minimum=version, maximum=version), timeout=10) as client:
            response = client.get(edge.url + "/readyz")
            assert response.status_code == 200 and tls_version(response) == name
    assert _tls_1_1_handshake_error(edge.nginx.port, pki).reason == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_served_directly_over_https_the_default_public_url_is_https(tmp_path, pki, edge, proxy, fhir_server):
    running = start_https_server(tmp_path / "server.log", pki, SCRIBE_AUTH__ENABLED="true",
                                 SCRIBE_FHIR__BASE_URL=proxy.url,
                                 SCRIBE_AUTH__ISSUERS=json.dumps([{"issuer": edge.oidc.issuer,
                                                                   "audiences": [proxy.url]}]),
                                 SCRIBE_SMART_APP__CLIENT_ID=APP_CLIENT,
                                 SCRIBE_SMART_APP__SESSION_KEYS=json.dumps(KEYS))
    try:
        launch_id = edge.oidc.launch(patient=DEMO_PATIENT, encounter=DEMO_ENCOUNTER, fhir_user=DOCTOR)
        started = httpx.get(running.url + "/smart/launch", params={"iss": proxy.url, "launch": launch_id},
                            verify=pki.client_context(), timeout=30)
        assert started.status_code == 302, started.text
        redirect_uri = parse_qs(urlsplit(started.headers["location"]).query)["redirect_uri"][0]
        assert redirect_uri == running.url + "/smart/callback"  # https://127.0.0.1:<port>
    finally:
        stop_server(running)
