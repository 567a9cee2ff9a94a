"""`fhir-scribe demo`: a local FHIR server (sekmet-fhir, in memory) seeded with a patient, a practitioner and an
encounter, and fhir-scribe wired to it. For trying the service and for the test suite; never for production
(set SCRIBE_FHIR__BASE_URL to the organization's server and run `fhir-scribe serve` instead).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
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


def start_fhir_server(port: int, work_dir: Path, log_path: Path | None = None, extra_config: str = "",
                      die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """sekmet-fhir on 127.0.0.1:port, in memory, strict validation, simulator off (+ extra YAML settings)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "sekmet.yaml"
    config.write_text(
        f"base_url: http://127.0.0.1:{port}/fhir\nhost: 127.0.0.1\nport: {port}\ndb_path: ':memory:'\n"
        f"data_dir: {work_dir / 'data'}\nlog_inbound: false\nsimulator: {{enabled: false}}\n"
        "validation: {inbound: strict}\n" + extra_config)
    out = log_path.open("wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "sekmet.cli", "serve", "-c", str(config)], cwd=work_dir,
                               env={**os.environ, "SEKMET_DB": ":memory:"}, stdout=out, stderr=subprocess.STDOUT,
                               preexec_fn=_die_with_parent if die_with_parent else None)
    wait_until_ready(process, f"http://127.0.0.1:{port}/fhir/metadata", "the FHIR server")
    return process


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when its parent dies, however the parent dies (even
    SIGKILL), so no FHIR server is left holding its port. Only where the parent has no other threads yet (the
    demo, before it serves): code between fork and exec must not depend on other threads' locks."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the demo's own signal handling still stops it


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    from service.serving import run as serve

    taken = [p for p in (port, fhir_port) if not port_free(p)]
    if taken:
        print(f"fhir-scribe demo: port {' and '.join(map(str, taken))} already in use on 127.0.0.1 (another demo "
              f"still running?). Stop it, or pick others: fhir-scribe demo --port 9080 --fhir-port 9081",
              file=sys.stderr)
        return 2
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with these handlers that ends in SystemExit,
    # so the finally below stops the FHIR server on SIGTERM exactly as on Ctrl+C.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: sys.exit(0))
    work_dir = Path("~/.cache/fhir-scribe/demo").expanduser()
    fhir = start_fhir_server(fhir_port, work_dir, die_with_parent=True)
    base = f"http://127.0.0.1:{fhir_port}/fhir"
    try:
        seed(base, resources=SEED + DEMO_CHART)
        os.environ["SCRIBE_FHIR__BASE_URL"] = base
        os.environ.setdefault("SCRIBE_AUTH__ENABLED", "false")  # the demo only: said loudly at start and in /readyz
        example = Path(__file__).resolve().parent.parent / "tests/fixtures/speech/dictation_chest_pain.ogg"
        audio = example if example.is_file() else Path("your-dictation.webm")  # the fixture is in a checkout
        print(f"""
Demo FHIR server: {base} (in memory; seeded Patient/{DEMO_PATIENT} with two medications and a problem,
Encounter/{DEMO_ENCOUNTER}, Practitioner/{DEMO_PRACTITIONER}). fhir-scribe: http://127.0.0.1:{port} (docs at /docs).
AUTHORIZATION IS OFF in the demo: every endpoint is open. Never expose it beyond this machine.
Stop it with Ctrl+C (or SIGTERM): both servers stop. Try a progress note over HTTP:

  curl -F file=@{audio} -F patient={DEMO_PATIENT} -F encounter={DEMO_ENCOUNTER} \\
       -F author=Practitioner/{DEMO_PRACTITIONER} http://127.0.0.1:{port}/v1/dictations

and the same recording as a consult note from the command line (another note type is another note; sending the
same recording with the same type again answers "created": false, the note already there):

  fhir-scribe dictate {audio} --patient {DEMO_PATIENT} --encounter {DEMO_ENCOUNTER} \\
       --author Practitioner/{DEMO_PRACTITIONER} --note-type 11488-4 --fhir-base {base}
""", file=sys.stderr, flush=True)
        return serve(port=port)
    finally:
        fhir.terminate()
        fhir.wait(timeout=10)
