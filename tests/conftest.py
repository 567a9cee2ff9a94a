"""Shared fixtures: the real packaged model, real speech, real formats made by ffmpeg, a real server over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.config import Settings, load_settings
from service.demo import seed, start_fhir_server, wait_until_ready
from service.documents.profiles import load_profiles
from service.transcription.engine import Transcriber
from service.transcription.models import resolve_model

FIXTURES = Path(__file__).parent / "fixtures"
SPEECH = FIXTURES / "speech"
REPO = Path(__file__).resolve().parent.parent

# Small limits for the test server, so "2x the size limit" and "too long" inputs stay cheap to build.
TEST_LIMITS = {"SCRIBE_AUDIO__MAX_UPLOAD_BYTES": str(8 * 1024 * 1024), "SCRIBE_AUDIO__MAX_DURATION_S": "120"}
# Servers for the stage tests run without authorization (as the demo does); tests/integration/test_auth*.py run
# with it, against real authorization servers.
NO_AUTH = {"SCRIBE_AUTH__ENABLED": "false"}


@dataclass(frozen=True)
class Dictation:
    name: str
    audio: bytes  # Ogg/Opus as committed
    reference: str

    @property
    def path(self) -> Path:
        return SPEECH / f"{self.name}.ogg"


def _dictations() -> list[Dictation]:
    return [Dictation(p.stem, p.with_suffix(".ogg").read_bytes(), p.read_text().strip())
            for p in sorted(SPEECH.glob("*.txt"))]


@pytest.fixture(scope="session")
def dictations() -> list[Dictation]:
    found = _dictations()
    assert len(found) >= 5, "speech fixtures missing"
    return found


@pytest.fixture(scope="session")
def dictation(dictations: list[Dictation]) -> Dictation:
    return next(d for d in dictations if d.name == "dictation_chest_pain")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def transcriber(settings: Settings) -> Transcriber:
    return Transcriber(resolve_model("tiny.en", settings.transcription.model_cache_dir), settings.transcription)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


# Every format the service accepts, derived from the committed Ogg/Opus by ffmpeg (as a browser or a recorder
# would produce it).
FORMATS = {
    "wav": ["-ar", "16000", "-c:a", "pcm_s16le"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis"],
    "opus.ogg": ["-c:a", "libopus", "-b:a", "24k"],
    "webm": ["-c:a", "libopus", "-b:a", "32k"],
}


@pytest.fixture(scope="session")
def encoded(tmp_path_factory: pytest.TempPathFactory, dictation: Dictation) -> dict[str, bytes]:
    out_dir = tmp_path_factory.mktemp("formats")
    result = {}
    for ext, codec in FORMATS.items():
        target = out_dir / f"speech.{ext}"
        ffmpeg("-i", str(dictation.path), *codec, str(target))
        result[ext] = target.read_bytes()
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(log_path: Path, **env: str) -> RunningServer:
    port = free_port()
    environment = {**os.environ, **NO_AUTH, **env, "SCRIBE_SERVER__PORT": str(port)}
    log_file = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=environment,
                               stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/readyz", "the service")
    except RuntimeError as failure:
        raise RuntimeError(f"{failure}:\n{log_path.read_text()}") from None
    return RunningServer(url, process, log_path)


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


class FhirServer:
    """A real FHIR server for the tests, seeded with the demo resources. Tests that take `fhir_server` run against
    every kind in FHIR_KINDS: sekmet-fhir (PyPI) and HAPI FHIR JPA (Maven Central, tests/hapi)."""

    kind: str
    base: str

    def restart(self) -> None:
        """Stop and start again on the same port (in memory, so re-seeded)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def search(self, resource_type: str, **params: str) -> list[dict]:
        """Every match, all pages (HAPI caps a page below a large _count; the suite writes hundreds of notes).
        Fresh: HAPI reuses a repeated search's results for 60 s (as its JPA starter does by default)."""
        found: list[dict] = []
        url: str | None = f"{self.base}/{resource_type}?{httpx.QueryParams(params)}"
        while url is not None:
            bundle = httpx.get(url, timeout=30, headers={"Cache-Control": "no-cache"}).json()
            found += [e["resource"] for e in bundle.get("entry", [])]
            url = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
        return found

    def validation_errors(self, resource: dict) -> list[str]:
        """The server's own $validate against the resource's profile: errors, and warnings we cannot explain."""
        return []  # sekmet-fhir validates structure on write only; HAPI overrides this


# Warnings HAPI's validator gives on our resources that are not defects (explained in fhir_profiles/README.md):
EXPLAINED_WARNINGS = (
    # LOINC, US Core's category system, IHE format codes, IHE BALP's entity types: no terminology server offline.
    "CodeSystem is unknown and can't be validated: ",
    # BALP's request-id entity type is BALP's own code; core R4's audit-entity-type binding is extensible.
    "(https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType#XrequestId) was not found in the value set "
    "'Audit event entity type'",
    # Best practice: a narrative (text.div). The note's sectioned XHTML travels as an attachment instead.
    "Constraint failed: dom-6: 'A resource should have narrative for robust management'",
)


class SekmetFhir(FhirServer):
    kind = "sekmet"

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.work_dir = work_dir
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.process = start_fhir_server(self.port, work_dir)
        seed(self.base)

    def restart(self) -> None:
        self.stop()
        self.process = start_fhir_server(self.port, self.work_dir)
        seed(self.base)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class HapiFhir(FhirServer):
    kind = "hapi"

    def __init__(self, work_dir: Path) -> None:
        from tests.support.hapi import HapiServer, build

        build()
        self._server = HapiServer(log_path=work_dir / "hapi.log")
        self._server.start()
        self.base = self._server.base
        self._prepare()

    def _prepare(self) -> None:
        seed(self.base)
        for profile in load_profiles():  # our StructureDefinitions, so HAPI validates against them
            response = httpx.put(f"{self.base}/StructureDefinition/{profile['id']}", json=profile, timeout=60,
                                 headers={"Content-Type": "application/fhir+json"})
            assert response.status_code in (200, 201), response.text

    def validation_errors(self, resource: dict) -> list[str]:
        profile = (resource.get("meta") or {}).get("profile", [None])[0]
        response = httpx.post(f"{self.base}/{resource['resourceType']}/$validate", json=resource, timeout=60,
                              params={"profile": profile} if profile else None,
                              headers={"Content-Type": "application/fhir+json"})
        outcome = response.json()
        found = []
        for issue in outcome.get("issue", []):
            text = f"{issue.get('severity')} {issue.get('diagnostics') or (issue.get('details') or {}).get('text')}"
            if issue.get("severity") in ("error", "fatal"):
                found.append(text)
            elif issue.get("severity") == "warning" and not any(w in text for w in EXPLAINED_WARNINGS):
                found.append(text)
        return found

    def restart(self) -> None:
        port = self._server.port
        self._server.stop()
        self._server.start(port=port)
        self._prepare()

    def stop(self) -> None:
        self._server.stop()

    def log(self) -> str:
        return self._server.log()


FHIR_KINDS = ["sekmet", "hapi"]


@pytest.fixture(scope="session", params=FHIR_KINDS)
def fhir_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FhirServer:
    kind = request.param
    fhir = (SekmetFhir if kind == "sekmet" else HapiFhir)(tmp_path_factory.mktemp(f"fhir-{kind}"))
    yield fhir
    fhir.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    """The service for stage tests that need no FHIR server (transcription, sections, limits, privacy)."""
    running = start_server(tmp_path_factory.mktemp("server") / "server.log", **TEST_LIMITS)
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def fhir_service(tmp_path_factory: pytest.TempPathFactory, fhir_server: FhirServer) -> RunningServer:
    """The service writing to `fhir_server` (one per FHIR server kind)."""
    running = start_server(tmp_path_factory.mktemp(f"service-{fhir_server.kind}") / "server.log", **TEST_LIMITS,
                           SCRIBE_FHIR__BASE_URL=fhir_server.base)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def proxy(fhir_server: FhirServer):
    """A fault-injecting, recording proxy in front of the FHIR server (one per test module)."""
    from tests.support.fault_proxy import FaultProxy

    running = FaultProxy(fhir_server.base, free_port()).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def oidc(proxy):
    """npm oidc-provider as the EHR's SMART authorization server, issuing tokens for the FHIR base (the proxy),
    which advertises it at .well-known/smart-configuration as an EHR does."""
    from tests.support.oidc import OidcServer

    server = OidcServer(fhir_audience=proxy.url).start()
    proxy.faults.smart_configuration = server.smart_configuration()
    yield server
    server.stop()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required for the tests (installed by .ci/run / make test)"
    return path
