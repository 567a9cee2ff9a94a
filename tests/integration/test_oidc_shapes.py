"""The test SMART authorization server's (tests/oidc) token shapes and client authentication methods, over HTTP.

fhir-scribe's SMART app has to cope with the EHR's tokens whatever their shape; these tests pin what each start-up
option of tests/oidc/server.js hands out, so the app's tests can rely on it: RS384 JWT access tokens (default),
opaque ones (introspected), smart-launcher-v2's HS256 tokens with the launch context nested under `context`,
id_tokens without `kid`, public / client_secret_basic / client_secret_post / private_key_jwt clients, and refresh
tokens that expire. No fhir-scribe service and no FHIR server are involved.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.support.oidc import SERVER_JS, OidcError, OidcServer, client_assertion, jwt_parts, public_jwks

PATIENT, ENCOUNTER, DOCTOR = "Patient/p-1", "Encounter/e-1", "Practitioner/dr-1"
SCOPE = "launch openid fhirUser patient/*.read offline_access"
CONFIDENTIAL = ["scribe-basic", "scribe-post", "scribe-pkjwt"]


@pytest.fixture(scope="module")
def app_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="module")
def default(app_key):
    """Today's shapes (jwt, kid kept), with scribe-pkjwt registered from app_key's public JWKS."""
    with OidcServer(app_key=app_key) as server:
        yield server


@pytest.fixture(scope="module")
def opaque():
    with OidcServer(access_token_shape="opaque") as server:
        yield server


@pytest.fixture(scope="module")
def hs256(app_key):
    """smart-launcher-v2 alike: HS256 access tokens with a nested context, id_tokens without kid."""
    with OidcServer(access_token_shape="hs256-nested", id_token_kid="omit", app_key=app_key) as server:
        yield server


def ehr_launch(server: OidcServer, client_id: str = "scribe-app", **auth) -> dict:
    launch = server.launch(patient=PATIENT, encounter=ENCOUNTER, fhir_user=DOCTOR, need_patient_banner=True,
                           smart_style_url=server.issuer + "/test/style.json")
    return server.authorize(client_id=client_id, scope=SCOPE, launch=launch, **auth)


def verifying_keys(server: OidcServer, token: str) -> list[str]:
    """The kids of the server's JWKS keys that verify `token`'s signature (RSA keys tried one by one)."""
    header, _ = jwt_parts(token)
    kids = []
    for jwk in server.jwks()["keys"]:
        if jwk["kty"] != "RSA":
            continue
        try:
            jwt.decode(token, RSAKey.import_key(jwk), algorithms=[header["alg"]])
        except JoseError:
            continue
        kids.append(jwk["kid"])
    return kids


# ---- default (jwt) ----------------------------------------------------------------------------------------------


def test_default_shapes_are_unchanged(default):
    tokens = ehr_launch(default)
    header, claims = jwt_parts(tokens["access_token"])
    assert header["alg"] == "RS384" and header["kid"]
    assert claims["iss"] == default.issuer and claims["aud"] == default.fhir_audience
    assert (claims["patient"], claims["encounter"], claims["fhirUser"]) == (PATIENT, ENCOUNTER, DOCTOR)
    assert "context" not in claims
    id_header, id_claims = jwt_parts(tokens["id_token"])
    assert id_header["alg"] == "RS256" and id_header["kid"]
    assert verifying_keys(default, tokens["id_token"]) == [id_header["kid"]]
    assert id_claims["fhirUser"] == DOCTOR
    assert (tokens["patient"], tokens["encounter"], tokens["need_patient_banner"]) == (PATIENT, ENCOUNTER, True)
    assert len([k for k in default.jwks()["keys"] if k["kty"] == "RSA"]) == 2


def test_discovery_lists_every_client_auth_method(default):
    smart = default.smart_configuration()
    assert {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"} <= set(
        smart["token_endpoint_auth_methods_supported"])
    assert {"client-public", "client-confidential-symmetric", "client-confidential-asymmetric"} <= set(
        smart["capabilities"])
    assert "private_key_jwt" in default.openid_configuration()["token_endpoint_auth_methods_supported"]


# ---- opaque -----------------------------------------------------------------------------------------------------


def test_opaque_access_token_introspects_with_launch_context(opaque):
    tokens = ehr_launch(opaque)
    token = tokens["access_token"]
    assert "." not in token
    answer = opaque.introspect(token)
    assert answer["active"] is True
    assert (answer["patient"], answer["encounter"], answer["fhirUser"]) == (PATIENT, ENCOUNTER, DOCTOR)
    assert answer["client_id"] == "scribe-app" and answer["sub"] == DOCTOR
    assert answer["aud"] == opaque.fhir_audience
    assert set(SCOPE.split()) <= set(answer["scope"].split())
    assert answer["exp"] > time.time()
    assert tokens["patient"] == PATIENT  # the token response's launch context is still there

    refreshed = opaque.refresh(tokens["refresh_token"])
    assert "." not in refreshed["access_token"] and refreshed["patient"] == PATIENT
    assert opaque.introspect(refreshed["access_token"])["patient"] == PATIENT
    assert jwt_parts(tokens["id_token"])[0]["kid"]  # id_tokens keep their kid by default


def test_opaque_explicit_audience(opaque):
    audience = "https://fhir.example.test/r4"
    tokens = opaque.authorize(scope="launch/patient patient/*.read", aud=audience)
    assert opaque.introspect(tokens["access_token"])["aud"] == audience


# ---- hs256-nested + id_token without kid --------------------------------------------------------------------------


def test_hs256_nested_access_token(hs256):
    tokens = ehr_launch(hs256)
    header, claims = jwt_parts(tokens["access_token"])
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert "iss" not in claims and "aud" not in claims and "patient" not in claims
    assert claims["context"] == {"patient": PATIENT, "encounter": ENCOUNTER, "need_patient_banner": True,
                                 "smart_style_url": hs256.issuer + "/test/style.json"}
    assert claims["client_id"] == "scribe-app" and claims["user"] == DOCTOR
    assert claims["scope"] == tokens["scope"]
    assert claims["exp"] - claims["iat"] == tokens["expires_in"]
    # SMART's launch parameters stay at the top level of the token response.
    assert (tokens["patient"], tokens["encounter"], tokens["need_patient_banner"]) == (PATIENT, ENCOUNTER, True)
    # Nobody can verify it with the published keys; the server introspects it (the opaque token behind it).
    assert verifying_keys(hs256, tokens["access_token"]) == []
    answer = hs256.introspect(tokens["access_token"])
    assert answer["active"] is True and answer["patient"] == PATIENT and answer["fhirUser"] == DOCTOR

    refreshed = hs256.refresh(tokens["refresh_token"])
    r_header, r_claims = jwt_parts(refreshed["access_token"])
    assert r_header == {"alg": "HS256", "typ": "JWT"} and "iss" not in r_claims and "aud" not in r_claims
    assert r_claims["context"]["patient"] == PATIENT and refreshed["patient"] == PATIENT


def test_hs256_standalone_launch_context(hs256):
    hs256.launch(patient=PATIENT, fhir_user=DOCTOR)
    tokens = hs256.authorize(scope="launch/patient openid fhirUser patient/*.read", login=DOCTOR)
    _, claims = jwt_parts(tokens["access_token"])
    assert claims["context"] == {"patient": PATIENT} and claims["user"] == DOCTOR


def test_id_token_without_kid_verifies_with_one_jwks_key(hs256):
    tokens = ehr_launch(hs256)
    header, claims = jwt_parts(tokens["id_token"])
    assert "kid" not in header and header["alg"] == "RS256"
    jwks = hs256.jwks()["keys"]
    assert len([k for k in jwks if k["kty"] == "RSA"]) == 2  # a verifier cannot pick by kid: it must try
    verified = verifying_keys(hs256, tokens["id_token"])
    assert len(verified) == 1
    assert next(k for k in jwks if k["kid"] == verified[0])["alg"] == "RS256"
    assert claims["iss"] == hs256.issuer and claims["aud"] == "scribe-app" and claims["fhirUser"] == DOCTOR
    # A KeySet lookup by kid has nothing to go on, and the refresh grant's id_token has no kid either.
    token = jwt.decode(tokens["id_token"], KeySet.import_key_set({"keys": [k for k in jwks if k["alg"] == "RS256"]}),
                       algorithms=["RS256"])
    assert token.claims["sub"] == DOCTOR
    refreshed = hs256.refresh(tokens["refresh_token"])
    assert "kid" not in jwt_parts(refreshed["id_token"])[0]
    assert len(verifying_keys(hs256, refreshed["id_token"])) == 1


# ---- client authentication ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", CONFIDENTIAL)
def test_confidential_client_gets_tokens(default, client_id):
    tokens = ehr_launch(default, client_id)
    _, claims = jwt_parts(tokens["access_token"])
    assert claims["client_id"] == client_id and claims["patient"] == PATIENT
    assert jwt_parts(tokens["id_token"])[1]["aud"] == client_id
    refreshed = default.refresh(tokens["refresh_token"], client_id=client_id)
    assert jwt_parts(refreshed["access_token"])[1]["client_id"] == client_id


@pytest.mark.parametrize("client_id", CONFIDENTIAL)
def test_confidential_client_introspects_its_own_opaque_tokens(hs256, client_id):
    tokens = ehr_launch(hs256, client_id)
    answer = hs256.introspect(tokens["access_token"], client_id=client_id)
    assert answer["active"] is True and answer["client_id"] == client_id and answer["patient"] == PATIENT
    # ... and not another client's.
    other = ehr_launch(hs256)
    assert hs256.introspect(other["access_token"], client_id=client_id) == {"active": False}


@pytest.mark.parametrize("client_id", ["scribe-basic", "scribe-post"])
def test_wrong_secret_is_refused(default, client_id):
    with pytest.raises(OidcError) as refused:
        ehr_launch(default, client_id, client_secret="not-the-secret")
    assert refused.value.error == "invalid_client" and refused.value.status == 401


@pytest.mark.parametrize(("client_id", "secret", "sent_as"), [("scribe-post", "scribe-post-secret", "basic"),
                                                             ("scribe-basic", "scribe-basic-secret", "post")])
def test_secret_sent_the_other_way_is_refused(default, client_id, secret, sent_as):
    """scribe-basic and scribe-post authenticate only the way they are registered (oidc-provider alone would take
    either); scribe-confidential keeps oidc-provider's leniency."""
    for endpoint in ("/token", "/token/introspection"):
        code = default.authorization_code(client_id=client_id, scope="openid fhirUser")
        form = {"grant_type": "authorization_code", "code": code["code"], "redirect_uri": code["redirect_uri"],
                "code_verifier": code["code_verifier"], "token": "x" * 43}
        if sent_as == "basic":
            response = httpx.post(default.issuer + endpoint, data=form, auth=(client_id, secret), timeout=10)
        else:
            response = httpx.post(default.issuer + endpoint, data={**form, "client_id": client_id,
                                                                   "client_secret": secret}, timeout=10)
        assert response.status_code == 401 and response.json()["error"] == "invalid_client", (endpoint, response.text)

    lenient = httpx.post(default.issuer + "/token/introspection", timeout=10, data={
        "token": "x" * 43, "client_id": "scribe-confidential", "client_secret": "scribe-confidential-secret"})
    assert lenient.json() == {"active": False}


def test_wrong_key_is_refused(default):
    with pytest.raises(OidcError) as refused:
        ehr_launch(default, "scribe-pkjwt", client_key=RSAKey.generate_key(2048))
    assert refused.value.error == "invalid_client"


def test_replayed_client_assertion_is_refused(default, app_key):
    assertion = client_assertion("scribe-pkjwt", app_key, default.issuer + "/token")
    def introspect() -> httpx.Response:
        return httpx.post(default.issuer + "/token/introspection", timeout=10, data={
            "token": "x" * 43, "client_id": "scribe-pkjwt", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})

    assert introspect().json() == {"active": False}
    assert introspect().status_code == 401


def test_no_pkjwt_client_without_app_keys(opaque):
    with pytest.raises(OidcError) as refused:
        opaque.authorization_code(client_id="scribe-pkjwt", scope="openid")
    assert refused.value.error == "invalid_client"


def test_pkjwt_with_ec_key_from_jwks_file(tmp_path):
    """--app-jwks-file given directly, with a P-384 key: scribe-pkjwt then signs ES384."""
    key = ECKey.generate_key("P-384")
    jwks_file = tmp_path / "app-jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(key)))
    with OidcServer(app_jwks_file=jwks_file, access_token_shape="opaque") as server:
        tokens = server.authorize(client_id="scribe-pkjwt", scope="openid fhirUser", client_key=key)
        assert server.introspect(tokens["access_token"], client_id="scribe-pkjwt", client_key=key)["active"]
        with pytest.raises(OidcError) as refused:
            server.authorize(client_id="scribe-pkjwt", scope="openid", client_key=ECKey.generate_key("P-384"))
        assert refused.value.error == "invalid_client"


# ---- refresh token expiry ---------------------------------------------------------------------------------------


def test_expired_refresh_token_is_refused():
    with OidcServer(refresh_token_ttl=1) as server:
        tokens = ehr_launch(server)
        time.sleep(2)
        with pytest.raises(OidcError) as refused:
            server.refresh(tokens["refresh_token"])
        assert refused.value.error == "invalid_grant"


def test_option_values_are_checked():
    with pytest.raises(ValueError):
        OidcServer(access_token_shape="paseto")
    with pytest.raises(ValueError):
        OidcServer(id_token_kid="drop")
    with pytest.raises(ValueError):
        OidcServer(refresh_token_ttl=0)


@pytest.mark.parametrize("flags", [["--access-token-shape", "paseto"], ["--id-token-kid", "drop"],
                                   ["--refresh-token-ttl", "soon"], ["--app-jwks-file", "/nonexistent.json"]])
def test_server_refuses_bad_flags(flags):
    node = shutil.which("node")
    assert node, "node is required"
    done = subprocess.run([node, str(SERVER_JS), "--port", "0", *flags], capture_output=True, text=True,
                          timeout=30, cwd=SERVER_JS.parent)
    assert done.returncode == 2 and "ready" not in done.stdout and flags[0] in done.stderr
