"""What a deployer installs: the wheel, built from this tree (`pip wheel --no-deps`), installed into a fresh venv
(its dependencies from the local pip cache), run from an empty folder. Everything the service reads at run time
(settings defaults, section rules, the app's files, the profiles) must come from the installed package, never
from this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER, wait_until_ready
from tests.conftest import REPO, free_port


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(REPO)],
                   check=True, timeout=600, cwd=work)
    [wheel] = (work / "dist").glob("fhir_scribe-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=120)
    subprocess.run([str(work / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   timeout=1200)
    empty = work / "elsewhere"
    empty.mkdir()
    return work / "venv/bin", empty


def _clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment without anything that points at this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIBE_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **settings}


def test_the_installed_package_is_not_the_checkout(installed):
    bin_dir, empty = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import service; print(service.__file__)"], cwd=empty,
                           env=_clean_env(), capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(bin_dir.parent)) and str(REPO) not in where


def test_profiles_are_listed_and_uploaded(installed, fhir_server):
    bin_dir, empty = installed
    listed = subprocess.run([str(bin_dir / "fhir-scribe"), "profiles"], cwd=empty, env=_clean_env(),
                            capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listed) == ["https://fhir-scribe.org/fhir/StructureDefinition/DictationAuditEvent",
                              "https://fhir-scribe.org/fhir/StructureDefinition/DictationNote"]
    uploaded = subprocess.run([str(bin_dir / "fhir-scribe"), "profiles", "--upload", "--fhir-base", fhir_server.base],
                              cwd=empty, env=_clean_env(), capture_output=True, text=True)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert uploaded.stdout.count(": 20") == 2  # 200 or 201 for each
    stored = httpx.get(f"{fhir_server.base}/StructureDefinition/DictationNote", timeout=30).json()
    assert stored["url"] == "https://fhir-scribe.org/fhir/StructureDefinition/DictationNote"


def test_serve_from_any_folder(installed, fhir_server, dictation, tmp_path):
    bin_dir, empty = installed
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([str(bin_dir / "fhir-scribe"), "serve"], cwd=empty, stdout=log,
                               stderr=subprocess.STDOUT,
                               env=_clean_env(SCRIBE_SERVER__PORT=str(port), SCRIBE_AUTH__ENABLED="false",
                                              SCRIBE_FHIR__BASE_URL=fhir_server.base))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/readyz", "the installed service")
        assert httpx.get(url + "/readyz").json()["status"] == "ready"
        page = httpx.get(url + "/app/")
        assert page.status_code == 200 and "Dictation" in page.text
        assert httpx.get(url + "/app/static/app.js").status_code == 200
        sections = httpx.post(url + "/v1/sections", json={"text": "Chief complaint: cough. Plan: rest."})
        assert [s["code"] for s in sections.json()["sections"]] == ["10154-3", "18776-5"]
        written = httpx.post(url + "/v1/dictations", files={"file": ("a.ogg", dictation.audio)},
                             data={"patient": DEMO_PATIENT, "encounter": DEMO_ENCOUNTER,
                                   "author": f"Practitioner/{DEMO_PRACTITIONER}"},
                             headers={"Idempotency-Key": f"wheel-{uuid.uuid4().hex}"}, timeout=120)
        assert written.status_code == 201, written.text
        doc_id = written.json()["document_reference_id"]
        assert fhir_server.search("DocumentReference", _id=doc_id)[0]["subject"]["reference"] == \
            f"Patient/{DEMO_PATIENT}"
    finally:
        process.terminate()
        process.wait(timeout=20)
