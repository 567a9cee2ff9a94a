"""fhir-scribe's own identity (SMART Backend Services) against sekmet-fhir's real token endpoint, which checks the
RS384 private_key_jwt assertion (signature via our /.well-known/jwks.json, aud, exp, jti replay) and then
enforces the token's scopes on every FHIR request."""

import asyncio
import time
from urllib.parse import parse_qsl

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from service.auth.backend import BackendAuthFailed, BackendServices
from service.auth.oauth import AuthServers
from service.config import BackendServicesSettings, ConfigError
from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER, seed, start_fhir_server
from tests.conftest import TEST_LIMITS, free_port, start_server, stop_server

SEED_TOKEN = "seed-only-static-token"
CLIENT = "fhir-scribe"
# Our default scope plus system/*.c: sekmet authorizes a transaction as a create on "*" rather than per entry
# (HAPI checks each entry). Servers like that need the wider grant; README says so.
SCOPE = "system/Patient.rs system/Encounter.rs system/DocumentReference.crs system/AuditEvent.c system/*.c"


@pytest.fixture(scope="module")
def key_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "scribe.pem"
    path.write_bytes(RSAKey.generate_key(2048).as_pem(private=True))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, key_path):
    """A SMART-protected FHIR server that trusts fhir-scribe's key as published by fhir-scribe itself."""
    service_port, fhir_port = free_port(), free_port()
    fhir_base = f"http://127.0.0.1:{fhir_port}/fhir"
    extra = (f"server_auth:\n  types: [smart, bearer]\n  tokens: [{SEED_TOKEN}]\n  token_lifetime: 300\n"
             f"  smart_clients:\n    - client_id: {CLIENT}\n"
             f"      jwks_url: http://127.0.0.1:{service_port}/.well-known/jwks.json\n"
             f"      scopes: {SCOPE}\n")
    work = tmp_path_factory.mktemp("fhir-smart")
    fhir = start_fhir_server(fhir_port, work, log_path=work / "sekmet.log", extra_config=extra)
    seed(fhir_base, SEED_TOKEN)
    env = {**TEST_LIMITS, "SCRIBE_FHIR__BASE_URL": fhir_base, "SCRIBE_FHIR__RETRIES": "0",
           "SCRIBE_AUTH__BACKEND_SERVICES__CLIENT_ID": CLIENT,
           "SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH": str(key_path),
           "SCRIBE_AUTH__BACKEND_SERVICES__SCOPE": SCOPE}
    from tests import conftest

    original = conftest.free_port
    conftest.free_port = lambda: service_port  # the service must listen where the FHIR server expects its keys
    try:
        service = start_server(tmp_path_factory.mktemp("svc") / "server.log", **env)
    finally:
        conftest.free_port = original
    yield service, fhir_base
    stop_server(service)
    fhir.terminate()
    fhir.wait(timeout=10)


def test_jwks_is_served_and_matches_the_key(setup, key_path):
    service, _ = setup
    jwks = httpx.get(service.url + "/.well-known/jwks.json").json()
    key = RSAKey.import_key(key_path.read_bytes())
    assert jwks["keys"][0]["n"] == key.as_dict(private=False)["n"]
    assert jwks["keys"][0]["alg"] == "RS384" and jwks["keys"][0]["kid"] == key.thumbprint()
    assert "d" not in jwks["keys"][0]  # public half only


def test_dictation_is_written_with_fhir_scribes_own_token(setup, dictation):
    service, fhir_base = setup
    assert httpx.get(f"{fhir_base}/Patient/{DEMO_PATIENT}").status_code == 401  # the server really is protected
    response = httpx.post(service.url + "/v1/dictations", files={"file": ("a.ogg", dictation.audio)},
                          data={"patient": DEMO_PATIENT, "encounter": DEMO_ENCOUNTER,
                                "author": f"Practitioner/{DEMO_PRACTITIONER}"}, timeout=120)
    assert response.status_code == 201, response.text
    doc = httpx.get(response.json()["document_reference_url"],
                    headers={"Authorization": f"Bearer {SEED_TOKEN}"}).json()
    assert doc["subject"]["reference"] == f"Patient/{DEMO_PATIENT}"


def test_assertion_and_token_caching(setup, key_path):
    """One token for many calls; the assertion meets SMART's rules; a bad key is refused by the real server."""
    _, fhir_base = setup
    settings = BackendServicesSettings(client_id=CLIENT, private_key_path=key_path)

    async def run():
        async with AuthServers() as servers:
            backend = BackendServices(settings, fhir_base, servers)
            sent = []

            async def record(request):  # what went over the wire to the token endpoint
                sent.append((str(request.url), dict(parse_qsl(request.content.decode()))))

            backend.oauth.event_hooks["request"].append(record)
            tokens = await asyncio.gather(*(backend.token() for _ in range(5)))
        return tokens, sent

    tokens, sent = asyncio.run(run())
    assert len(set(tokens)) == 1 and len(sent) == 1  # cached, and concurrent callers shared one request
    url, form = sent[0]
    assert url.endswith("/auth/token") and form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.decode(form["client_assertion"], RSAKey.import_key(key_path.read_bytes()), algorithms=["RS384"])
    assert header.header["alg"] == "RS384" and header.header["typ"] == "JWT" and header.header["kid"]
    claims = header.claims
    assert claims["iss"] == claims["sub"] == CLIENT and claims["aud"] == url
    assert claims["exp"] - time.time() <= 300 and len(claims["jti"]) >= 16


def test_an_unregistered_key_is_refused(setup, tmp_path):
    _, fhir_base = setup
    other = tmp_path / "other.pem"
    other.write_bytes(RSAKey.generate_key(2048).as_pem(private=True))

    async def run():
        async with AuthServers() as servers:
            backend = BackendServices(BackendServicesSettings(client_id=CLIENT, private_key_path=other), fhir_base,
                                      servers)
            await backend.token()

    with pytest.raises(BackendAuthFailed, match="refused fhir-scribe's credentials: client_assertion verification"):
        asyncio.run(run())


def test_unusable_key_files_fail_at_start(tmp_path):
    from service.auth.backend import load_key

    missing = BackendServicesSettings(client_id=CLIENT, private_key_path=tmp_path / "none.pem")
    with pytest.raises(ConfigError, match="PRIVATE_KEY_PATH: cannot read"):
        load_key(missing)
    public = tmp_path / "public.pem"
    public.write_bytes(RSAKey.generate_key(2048).as_pem(private=False))
    with pytest.raises(ConfigError, match="no private key"):
        load_key(BackendServicesSettings(client_id=CLIENT, private_key_path=public))
