"""Driver for the test-only SMART / OpenID Connect authorization server in tests/oidc (oidc-provider on Node).

It plays the EHR's authorization server: `start()` runs `node tests/oidc/server.js`, `launch()` registers an EHR
launch context, and `authorize()` walks the whole authorization code + PKCE flow over plain HTTP (login and consent
pages included, no browser) and returns the token response. See tests/oidc/README.md.

Start-up options play EHRs whose tokens look different: ``OidcServer(access_token_shape="opaque" | "hs256-nested",
id_token_kid="omit", app_key=<private key> or app_jwks_file=..., refresh_token_ttl=<seconds>)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

OIDC_DIR = Path(__file__).resolve().parent.parent / "oidc"
SERVER_JS = OIDC_DIR / "server.js"
DEFAULT_FHIR_AUDIENCE = "http://127.0.0.1:8081/fhir"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/smart/callback"
DEFAULT_USER = "Practitioner/example"
OPAQUE_RESOURCE = "urn:opaque-test"

ACCESS_TOKEN_SHAPES = ("jwt", "opaque", "hs256-nested")
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Static clients of server.js, each accepting any http://127.0.0.1:<port>/smart/callback, PKCE required for all.
# scribe-pkjwt exists only when the server has the app's public keys (OidcServer(app_key=...) or app_jwks_file=...).
CLIENT_AUTH_METHODS: dict[str, str] = {
    "scribe-app": "none",
    "scribe-confidential": "client_secret_basic",  # may also introspect any client's tokens
    "scribe-basic": "client_secret_basic",
    "scribe-post": "client_secret_post",
    "scribe-pkjwt": "private_key_jwt",
}
CLIENT_SECRETS: dict[str, str | None] = {
    "scribe-app": None,
    "scribe-confidential": "scribe-confidential-secret",
    "scribe-basic": "scribe-basic-secret",
    "scribe-post": "scribe-post-secret",
    "scribe-pkjwt": None,
}

AppKey = RSAKey | ECKey | str | bytes  # a joserfc key or a PEM private key


class OidcError(RuntimeError):
    """The authorization server refused a step (error/error_description from an OAuth error response)."""

    def __init__(self, step: str, error: str, description: str | None = None, status: int | None = None) -> None:
        self.step, self.error, self.description, self.status = step, error, description, status
        super().__init__(f"{step}: {error}" + (f" ({description})" if description else "")
                         + (f" [HTTP {status}]" if status else ""))


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS, NOT verified: for asserting a token's shape."""
    header, payload = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
                       for part in token.split(".")[:2])
    return header, payload


def _private_key(key: AppKey) -> RSAKey | ECKey:
    if isinstance(key, (RSAKey, ECKey)):
        return key
    data = key.encode() if isinstance(key, str) else key
    try:
        return RSAKey.import_key(data)
    except Exception:  # noqa: BLE001 - not RSA: an EC key (ECKey says why when it is neither)
        return ECKey.import_key(data)


def _signing_alg(key: RSAKey | ECKey) -> str:
    return "ES384" if isinstance(key, ECKey) else "RS384"


def _kid(key: RSAKey | ECKey) -> str:
    return key.kid or key.thumbprint()  # RFC 7638 thumbprint, as fhir-scribe's own keys have


def public_jwks(*keys: AppKey) -> dict:
    """The JWKS (public keys, kid = RFC 7638 thumbprint unless the key has one, alg RS384/ES384) for `keys`."""
    out = []
    for key in map(_private_key, keys):
        out.append({**key.as_dict(private=False), "kid": _kid(key), "alg": _signing_alg(key), "use": "sig"})
    return {"keys": out}


def client_assertion(client_id: str, key: AppKey, audience: str, lifetime: int = 240) -> str:
    """A private_key_jwt client assertion as SMART wants it: header kid + typ JWT, RS384 (ES384 for an EC key),
    iss = sub = client_id, aud = `audience` (the token endpoint), exp <= 5 minutes, a fresh jti."""
    private = _private_key(key)
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + min(lifetime, 300),
              "jti": secrets.token_urlsafe(24)}
    alg = _signing_alg(private)
    # joserfc only signs with its "recommended" algorithms unless told: RS384/ES384 must be named.
    return jwt.encode({"alg": alg, "kid": _kid(private), "typ": "JWT"}, claims, private, algorithms=[alg])


_signing_keys_file: Path | None = None


def _shared_signing_keys() -> Path:
    """One pair of server signing keys (RS384, RS256) per test process, written once to a private temp file.

    Generating two RSA keys in Node at every start took over 20 s once on a loaded 2-core CI machine; each
    server still has its own issuer, so a token from one is never accepted as another's."""
    global _signing_keys_file
    if _signing_keys_file is None or not _signing_keys_file.exists():
        keys = []
        for alg in ("RS384", "RS256"):
            key = RSAKey.generate_key(2048)
            keys.append({**key.as_dict(private=True), "kid": f"{alg.lower()}-{secrets.token_hex(6)}", "alg": alg})
        fd, name = tempfile.mkstemp(prefix="oidc-signing-keys-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(keys, out)
        _signing_keys_file = Path(name)
    return _signing_keys_file


class OidcServer:
    def __init__(self, fhir_audience: str = DEFAULT_FHIR_AUDIENCE, node: str = "node", *,
                 access_token_shape: str = "jwt", id_token_kid: str = "keep", app_key: AppKey | None = None,
                 app_jwks_file: str | os.PathLike[str] | None = None, refresh_token_ttl: int | None = None,
                 web_redirect_uri: str | None = None) -> None:
        """`access_token_shape`: "jwt" (RS384, top-level claims; the default), "opaque" (introspect them) or
        "hs256-nested" (smart-launcher-v2: HS256, no iss/aud/kid, launch context under `context`).
        `id_token_kid`: "keep" or "omit" (id_tokens without a kid header). `app_key`: the private key scribe-pkjwt
        authenticates with (its public JWKS is written for the server unless `app_jwks_file` is given).
        `web_redirect_uri`: registers scribe-web, a public PKCE web client with exactly this redirect URI (e.g.
        https through a TLS proxy). `app_jwks_file`: the public JWKS the server registers scribe-pkjwt with.
        `refresh_token_ttl`: seconds
        (server default 86400). Only non-default options go on the command line."""
        if access_token_shape not in ACCESS_TOKEN_SHAPES:
            raise ValueError(f"access_token_shape must be one of {ACCESS_TOKEN_SHAPES}, not {access_token_shape!r}")
        if id_token_kid not in ("keep", "omit"):
            raise ValueError(f"id_token_kid must be 'keep' or 'omit', not {id_token_kid!r}")
        if refresh_token_ttl is not None and (not isinstance(refresh_token_ttl, int) or refresh_token_ttl < 1):
            raise ValueError(f"refresh_token_ttl must be a positive int (seconds), not {refresh_token_ttl!r}")
        self.fhir_audience = fhir_audience
        self.node = node
        self.access_token_shape = access_token_shape
        self.id_token_kid = id_token_kid
        self.app_key = _private_key(app_key) if app_key is not None else None
        self.app_jwks_file = Path(app_jwks_file) if app_jwks_file is not None else None
        self.refresh_token_ttl = refresh_token_ttl
        self.web_redirect_uri = web_redirect_uri
        self._proc: subprocess.Popen[str] | None = None
        self._issuer: str | None = None
        self._stderr = None
        self._jwks_tmp: Path | None = None
        self._launch_users: dict[str, str] = {}  # launch id -> fhirUser, to log in as that user by default
        self.start_seconds: float | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise RuntimeError("OidcServer is not started")
        return self._issuer

    def start(self, port: int | None = None, timeout: float = 60.0) -> "OidcServer":
        """Run the server on 127.0.0.1:`port` (a free port chosen by the OS when None); wait for it to be ready."""
        if self._proc is not None:
            raise RuntimeError("OidcServer already started")
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"{OIDC_DIR / 'node_modules'} is missing: run `npm ci --prefix tests/oidc` first")
        node = shutil.which(self.node)
        if node is None:
            raise RuntimeError(f"`{self.node}` (Node.js) not found on PATH; the test OIDC server needs it")
        self._stderr = tempfile.TemporaryFile(mode="w+", prefix="oidc-stderr-")
        began = time.monotonic()
        self._proc = subprocess.Popen(
            [node, str(SERVER_JS), "--port", str(port or 0), "--fhir-audience", self.fhir_audience,
             *self._options()],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, text=True, cwd=OIDC_DIR)
        ready: list[str] = []
        got_line = threading.Event()

        def read_stdout() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:  # keep draining so the pipe never fills
                if not ready:
                    ready.append(line.strip())
                    got_line.set()
            got_line.set()

        threading.Thread(target=read_stdout, name="oidc-stdout", daemon=True).start()
        if not got_line.wait(timeout) or not ready or not ready[0].startswith("ready "):
            detail = self._stderr_tail()
            exited = self._proc.poll()
            self.stop()
            raise RuntimeError(f"test OIDC server did not become ready in {time.monotonic() - began:.1f}s "
                               f"(exit status {exited}): {ready[:1]} {detail}")
        self._issuer = ready[0].split(" ", 1)[1]
        self.start_seconds = time.monotonic() - began
        return self

    def _options(self) -> list[str]:
        options = ["--signing-keys-file", str(_shared_signing_keys())]
        if self.access_token_shape != "jwt":
            options += ["--access-token-shape", self.access_token_shape]
        if self.id_token_kid != "keep":
            options += ["--id-token-kid", self.id_token_kid]
        if self.refresh_token_ttl is not None:
            options += ["--refresh-token-ttl", str(self.refresh_token_ttl)]
        if self.web_redirect_uri is not None:
            options += ["--web-redirect-uri", self.web_redirect_uri]
        jwks_file = self.app_jwks_file
        if jwks_file is None and self.app_key is not None:
            fd, name = tempfile.mkstemp(prefix="oidc-app-jwks-", suffix=".json")
            with os.fdopen(fd, "w") as out:
                json.dump(public_jwks(self.app_key), out)
            self._jwks_tmp = jwks_file = Path(name)
        if jwks_file is not None:
            options += ["--app-jwks-file", str(jwks_file)]
        return options

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._jwks_tmp is not None:
            self._jwks_tmp.unlink(missing_ok=True)
            self._jwks_tmp = None
        self._issuer = None

    def __enter__(self) -> "OidcServer":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    # ---- plain endpoints -------------------------------------------------------------------------------------------

    def _get_json(self, path: str) -> dict:
        response = httpx.get(self.issuer + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def jwks(self) -> dict:
        return self._get_json("/jwks")

    def openid_configuration(self) -> dict:
        return self._get_json("/.well-known/openid-configuration")

    def smart_configuration(self) -> dict:
        return self._get_json("/.well-known/smart-configuration")

    def launch(self, patient: str | None = None, encounter: str | None = None, fhir_user: str | None = None,
               **extra: object) -> str:
        """Register an EHR launch context (test-only POST /test/launch); returns the opaque `launch` id.

        `extra` goes into the context as is (e.g. need_patient_banner=True, smart_style_url=..., intent=...) and is
        returned in the token response. The last context posted is also the one standalone launches get.
        """
        body = {"patient": patient, "encounter": encounter, "fhirUser": fhir_user, **extra}
        response = httpx.post(self.issuer + "/test/launch", json={k: v for k, v in body.items() if v is not None},
                              timeout=10)
        response.raise_for_status()
        launch = response.json()["launch"]
        if fhir_user:
            self._launch_users[launch] = fhir_user
        return launch

    # ---- authorization code flow -----------------------------------------------------------------------------------

    def authorize_url(self, *, client_id: str = "scribe-app", scope: str, redirect_uri: str = DEFAULT_REDIRECT_URI,
                      state: str, code_challenge: str, launch: str | None = None, aud: str | None = None,
                      resource: str | None = None, nonce: str | None = None, **extra: str) -> str:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
                  "state": state, "code_challenge": code_challenge, "code_challenge_method": "S256"}
        for key, value in (("launch", launch), ("aud", aud), ("resource", resource), ("nonce", nonce)):
            if value is not None:
                params[key] = value
        params.update(extra)
        return f"{self.issuer}/auth?{urlencode(params)}"

    def complete_authorization(self, authorize_url: str, login: str = DEFAULT_USER, password: str = "any") -> str:
        """Drive an authorization request URL (made by the test or by an app under test) through login and consent
        over HTTP, as a browser would; returns the final redirect URL (redirect_uri?code=...&state=...&iss=...).

        Raises OidcError when the server answers with an error page instead of a redirect. An OAuth error
        redirected to the client (redirect_uri?error=...) is returned like a success: the caller decides.
        """
        issuer = self.issuer
        with httpx.Client(follow_redirects=False, timeout=10) as browser:  # keeps the session cookies
            url = authorize_url
            for _ in range(12):
                if not url.startswith(issuer + "/"):
                    return url  # left the authorization server: the client's redirect_uri
                response = browser.get(url)
                if response.status_code in (302, 303):
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200 or "/interaction/" not in url:
                    raise OidcError("authorization", *_error_from_page(response.text), status=response.status_code)
                prompt = re.search(r'name="prompt" value="(\w+)"', response.text)
                if prompt is None:
                    raise OidcError("interaction", "no prompt form on the interaction page", status=200)
                form = {"prompt": prompt.group(1)}
                if form["prompt"] == "login":
                    form.update(login=login, password=password)
                submitted = browser.post(url, data=form)
                if submitted.status_code not in (302, 303):
                    raise OidcError("interaction", *_error_from_page(submitted.text), status=submitted.status_code)
                url = urljoin(url, submitted.headers["location"])
            raise OidcError("authorization", "too many redirects")

    def authorization_code(self, *, client_id: str = "scribe-app",
                           scope: str = "launch openid fhirUser patient/*.read",
                           redirect_uri: str = DEFAULT_REDIRECT_URI, launch: str | None = None,
                           aud: str | None = None, resource: str | None = None, state: str | None = None,
                           nonce: str | None = None, code_verifier: str | None = None,
                           code_challenge: str | None = None, login: str | None = None, **extra: str) -> dict:
        """Authorize up to the code only: {"code", "state", "iss", "redirect_uri", "code_verifier"}.

        Pass `code_challenge` (from the app under test) to let the app exchange the code with its own verifier;
        `code_verifier` is then None. Raises OidcError if the redirect carries an OAuth error.
        """
        state = state or secrets.token_urlsafe(16)
        if code_challenge is None:
            code_verifier = code_verifier or secrets.token_urlsafe(48)
            code_challenge = s256(code_verifier)
        url = self.authorize_url(client_id=client_id, scope=scope, redirect_uri=redirect_uri, state=state,
                                 code_challenge=code_challenge, launch=launch, aud=aud, resource=resource,
                                 nonce=nonce, **extra)
        user = login or (self._launch_users.get(launch) if launch else None) or DEFAULT_USER
        final = self.complete_authorization(url, login=user)
        query = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
        if "error" in query:
            raise OidcError("authorization", query["error"], query.get("error_description"))
        if query.get("state") != state:
            raise OidcError("authorization", "state mismatch", f"sent {state!r}, got {query.get('state')!r}")
        return {"code": query["code"], "state": query["state"], "iss": query.get("iss"),
                "redirect_uri": redirect_uri, "code_verifier": code_verifier}

    def exchange_code(self, code: str, *, code_verifier: str, client_id: str = "scribe-app",
                      redirect_uri: str = DEFAULT_REDIRECT_URI, client_secret: str | None = None,
                      client_key: AppKey | None = None) -> dict:
        """The authorization_code grant, authenticated as `client_id` is registered (see `_client_auth`)."""
        return self._token(client_id, {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": redirect_uri, "code_verifier": code_verifier},
                           client_secret=client_secret, client_key=client_key)

    def refresh(self, refresh_token: str, *, client_id: str = "scribe-app", scope: str | None = None,
                client_secret: str | None = None, client_key: AppKey | None = None) -> dict:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope is not None:
            form["scope"] = scope
        return self._token(client_id, form, client_secret=client_secret, client_key=client_key)

    def authorize(self, client_id: str = "scribe-app", scope: str = "launch openid fhirUser patient/*.read",
                  redirect_uri: str = DEFAULT_REDIRECT_URI, launch: str | None = None, aud: str | None = None,
                  resource: str | None = None, code_verifier: str | None = None, state: str | None = None,
                  nonce: str | None = None, login: str | None = None, client_secret: str | None = None,
                  client_key: AppKey | None = None, **extra: str) -> dict:
        """The full authorization code + PKCE (S256) flow; returns the token response JSON (access_token, token_type,
        expires_in, scope, id_token when openid, refresh_token when offline_access, and the SMART context:
        patient, encounter, need_patient_banner, smart_style_url ...). `client_secret`/`client_key` override the
        client's registered credentials at the token endpoint (e.g. a wrong one)."""
        code = self.authorization_code(client_id=client_id, scope=scope, redirect_uri=redirect_uri, launch=launch,
                                       aud=aud, resource=resource, state=state, nonce=nonce,
                                       code_verifier=code_verifier, login=login, **extra)
        return self.exchange_code(code["code"], code_verifier=code["code_verifier"], client_id=client_id,
                                  redirect_uri=redirect_uri, client_secret=client_secret, client_key=client_key)

    def user_token(self, patient: str | None, encounter: str | None, fhir_user: str, scopes: str,
                   aud: str | None = None, opaque: bool = False, client_id: str = "scribe-app") -> str:
        """An EHR-launch access token for `fhir_user` in the patient/encounter context with `scopes` (plus `launch`).

        JWT (RS384) audienced to `aud` (default: the server's FHIR audience); opaque=True gives an opaque token for
        introspection, audienced the same way.
        """
        launch = self.launch(patient=patient, encounter=encounter, fhir_user=fhir_user)
        scope = " ".join(dict.fromkeys(["launch", *scopes.split()]))
        if opaque:
            resource = OPAQUE_RESOURCE + (f"?aud={quote(aud, safe='')}" if aud else "")
            tokens = self.authorize(client_id=client_id, scope=scope, launch=launch, resource=resource,
                                    login=fhir_user)
        else:
            tokens = self.authorize(client_id=client_id, scope=scope, launch=launch, aud=aud or self.fhir_audience,
                                    login=fhir_user)
        return tokens["access_token"]

    def introspect(self, token: str, client_id: str = "scribe-confidential", *, client_secret: str | None = None,
                   client_key: AppKey | None = None) -> dict:
        """RFC 7662 introspection, authenticated as `client_id` is registered (scribe-confidential may introspect
        any token; scribe-basic, scribe-post and scribe-pkjwt their own)."""
        extra, auth = self._client_auth(client_id, client_secret, client_key)
        response = httpx.post(self.issuer + "/token/introspection", data={"token": token, **extra}, auth=auth,
                              timeout=10)
        if response.status_code != 200:
            raise _oauth_error("introspection", response)
        return response.json()

    def _client_auth(self, client_id: str, secret: str | None = None,
                     key: AppKey | None = None) -> tuple[dict[str, str], tuple[str, str] | None]:
        """(form fields, HTTP basic credentials) authenticating `client_id` as it is registered: none (client_id in
        the form), client_secret_basic, client_secret_post, or private_key_jwt (an assertion signed by `key`, else
        the server's `app_key`). Unknown client ids are sent as public clients."""
        method = CLIENT_AUTH_METHODS.get(client_id, "none")
        if method == "private_key_jwt":
            key = key if key is not None else self.app_key
            if key is None:
                raise ValueError(f"{client_id} authenticates with private_key_jwt: pass client_key= or app_key=")
            return {"client_id": client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE,
                    "client_assertion": client_assertion(client_id, key, self.issuer + "/token")}, None
        secret = secret if secret is not None else CLIENT_SECRETS.get(client_id)
        if method == "client_secret_post":
            return {"client_id": client_id, "client_secret": secret or ""}, None
        if method == "client_secret_basic" and secret is not None:
            return {}, (client_id, secret)
        return {"client_id": client_id}, None

    def _token(self, client_id: str, form: dict, *, client_secret: str | None = None,
               client_key: AppKey | None = None) -> dict:
        extra, auth = self._client_auth(client_id, client_secret, client_key)
        response = httpx.post(self.issuer + "/token", data={**form, **extra}, auth=auth, timeout=10)
        if response.status_code != 200:
            raise _oauth_error("token", response)
        return response.json()


def _oauth_error(step: str, response: httpx.Response) -> OidcError:
    try:
        body = response.json()
        return OidcError(step, body.get("error", "error"), body.get("error_description"), response.status_code)
    except ValueError:
        return OidcError(step, response.text[:200], status=response.status_code)


def _error_from_page(html: str) -> tuple[str, str | None]:
    """(error, error_description) from oidc-provider's HTML error page (`<pre><strong>error</strong>: ...</pre>`)."""
    fields = {m.group(1): unescape(m.group(2).strip())
              for m in re.finditer(r"<pre><strong>(\w+)</strong>:(.*?)</pre>", html, re.S)}
    if "error" in fields:
        return fields["error"], fields.get("error_description")
    return "unexpected_response", re.sub(r"<[^>]+>", " ", html)[:300].strip()
