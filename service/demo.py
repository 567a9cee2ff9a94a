"""`fhir-scribe demo`: a local FHIR server (sekmet-fhir, in memory) seeded with a patient, a practitioner and an
encounter, and fhir-scribe wired to it. For trying the service and for the test suite; never for production
(set SCRIBE_FHIR__BASE_URL to the organization's server and run `fhir-scribe serve` instead).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

DEMO_PATIENT, DEMO_ENCOUNTER, DEMO_PRACTITIONER, DEMO_ORGANIZATION = "demo-patient", "demo-encounter", "demo-practitioner", "demo-org"
OTHER_PATIENT, OTHER_ENCOUNTER = "other-patient", "other-encounter"
_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

SEED: list[dict] = [
    {"resourceType": "Organization", "id": DEMO_ORGANIZATION, "active": True, "name": "Demo General Hospital"},
    {"resourceType": "Practitioner", "id": DEMO_PRACTITIONER, "active": True,
     "name": [{"family": "Example", "given": ["Dana"], "prefix": ["Dr."]}]},
    {"resourceType": "Patient", "id": DEMO_PATIENT, "active": True, "gender": "male", "birthDate": "1968-04-02",
     "name": [{"family": "Testpatient", "given": ["Alex"]}],
     "identifier": [{"system": "urn:oid:1.2.3.4.5.1", "value": "MRN-0001"}]},
    {"resourceType": "Encounter", "id": DEMO_ENCOUNTER, "status": "in-progress",
     "class": {"system": _ACT, "code": "AMB", "display": "ambulatory"}, "subject": {"reference": f"Patient/{DEMO_PATIENT}"},
     "serviceProvider": {"reference": f"Organization/{DEMO_ORGANIZATION}"}},
    {"resourceType": "Patient", "id": OTHER_PATIENT, "active": True, "gender": "female", "birthDate": "1990-01-01",
     "name": [{"family": "Otherpatient", "given": ["Sam"]}]},
    {"resourceType": "Encounter", "id": OTHER_ENCOUNTER, "status": "in-progress",
     "class": {"system": _ACT, "code": "AMB", "display": "ambulatory"}, "subject": {"reference": f"Patient/{OTHER_PATIENT}"}},
]

# The demo patient's chart, seeded by `fhir-scribe demo` only (the test suite's demo patient has none; charted
# patients of its own are in tests/fixtures/speech_meds): the example dictation then shows vocabulary biasing.
_UCUM = "http://unitsofmeasure.org"
DEMO_CHART: list[dict] = [
    {"resourceType": "MedicationRequest", "id": "demo-mr-lisinopril", "status": "active", "intent": "order",
     "subject": {"reference": f"Patient/{DEMO_PATIENT}"}, "medicationCodeableConcept": {"text": "Lisinopril 10 MG Oral Tablet"},
     "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg", "system": _UCUM, "code": "mg"}}]}]},
    {"resourceType": "MedicationRequest", "id": "demo-mr-atorvastatin", "status": "active", "intent": "order",
     "subject": {"reference": f"Patient/{DEMO_PATIENT}"}, "medicationCodeableConcept": {"text": "Atorvastatin 40 MG Oral Tablet"},
     "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg", "system": _UCUM, "code": "mg"}}]}]},
    {"resourceType": "Condition", "id": "demo-condition-hypertension", "subject": {"reference": f"Patient/{DEMO_PATIENT}"},
     "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
     "code": {"text": "Essential hypertension"}},
]


def start_fhir_server(port: int, work_dir: Path, log_path: Path | None = None,
                      extra_config: str = "") -> subprocess.Popen[bytes]:
    """sekmet-fhir on 127.0.0.1:port, in memory, strict validation, simulator off (+ extra YAML settings)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "sekmet.yaml"
    config.write_text(
        f"base_url: http://127.0.0.1:{port}/fhir\nhost: 127.0.0.1\nport: {port}\ndb_path: ':memory:'\n"
        f"data_dir: {work_dir / 'data'}\nlog_inbound: false\nsimulator: {{enabled: false}}\n"
        "validation: {inbound: strict}\n" + extra_config)
    out = log_path.open("wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "sekmet.cli", "serve", "-c", str(config)], cwd=work_dir,
                               env={**os.environ, "SEKMET_DB": ":memory:"}, stdout=out, stderr=subprocess.STDOUT)
    wait_until_ready(process, f"http://127.0.0.1:{port}/fhir/metadata", "the FHIR server")
    return process


def wait_until_ready(process: subprocess.Popen[bytes], url: str, what: str, timeout_s: float = 60) -> None:
    """Poll ``url`` until it answers 200; a process that exits or a timeout raises, naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{what} did not answer {url} within {timeout_s:g} s")


def seed(base_url: str, token: str | None = None, resources: list[dict] = SEED) -> None:
    headers = {"Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for resource in resources:
        response = httpx.put(f"{base_url}/{resource['resourceType']}/{resource['id']}", json=resource,
                             headers=headers, timeout=10)
        response.raise_for_status()


def run(port: int = 8080, fhir_port: int = 8081) -> int:
    from service.cli import main as cli_main

    work_dir = Path("~/.cache/fhir-scribe/demo").expanduser()
    fhir = start_fhir_server(fhir_port, work_dir)
    base = f"http://127.0.0.1:{fhir_port}/fhir"
    try:
        seed(base, resources=SEED + DEMO_CHART)
        os.environ["SCRIBE_FHIR__BASE_URL"] = base
        os.environ.setdefault("SCRIBE_AUTH__ENABLED", "false")  # the demo only: said loudly at start and in /readyz
        example = Path(__file__).resolve().parent.parent / "tests/fixtures/speech/dictation_chest_pain.ogg"
        print(f"""
Demo FHIR server: {base} (in memory; seeded Patient/{DEMO_PATIENT} with two medications and a problem,
Encounter/{DEMO_ENCOUNTER}, Practitioner/{DEMO_PRACTITIONER}). fhir-scribe: http://127.0.0.1:{port} (docs at /docs).
AUTHORIZATION IS OFF in the demo: every endpoint is open. Never expose it beyond this machine. Try:

  curl -F file=@{example} -F patient={DEMO_PATIENT} -F encounter={DEMO_ENCOUNTER} \\
       -F author=Practitioner/{DEMO_PRACTITIONER} http://127.0.0.1:{port}/v1/dictations

  .venv/bin/fhir-scribe dictate {example} --patient {DEMO_PATIENT} --encounter {DEMO_ENCOUNTER} \\
       --author Practitioner/{DEMO_PRACTITIONER} --fhir-base {base}
""", file=sys.stderr, flush=True)
        return cli_main(["serve", "--port", str(port)])
    finally:
        fhir.terminate()
        fhir.wait(timeout=10)
