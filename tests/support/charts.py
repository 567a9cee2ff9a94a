"""The dictations' charts (tests/fixtures/speech_meds/charts.yaml) as FHIR resources for the test FHIR server,
and drug-name recall."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CHARTS = FIXTURES / "speech_meds" / "charts.yaml"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/{}-clinical"
_UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class ChartedDictation:
    name: str  # e.g. dictation_gout
    audio: bytes
    reference: str
    patient: str  # its patient's id on the FHIR server
    chart: dict
    drugs: list[str]  # drug mentions in the reference, with repeats

    def resources(self) -> list[dict]:
        subject = {"reference": f"Patient/{self.patient}"}
        made = [{"resourceType": "Patient", "id": self.patient, "active": True, "gender": "unknown",
                 "name": [{"family": "Vocabulary", "given": [self.name.split("_", 1)[1].replace("_", "-")]}]}]
        for i, order in enumerate(self.chart["requests"]):
            request = {"resourceType": "MedicationRequest", "id": f"{self.patient}-mr{i}", "status": "active",
                       "intent": "order", "subject": subject}
            if "medication" in order:
                made.append({"resourceType": "Medication", "id": f"{self.patient}-med{i}",
                             "code": {"text": order["medication"]}})
                request["medicationReference"] = {"reference": f"Medication/{self.patient}-med{i}"}
            else:
                request["medicationCodeableConcept"] = {"text": order["text"]}
            value, unit = order["dose"]
            request["dosageInstruction"] = [{"doseAndRate": [{"doseQuantity": {
                "value": value, "unit": unit, "system": _UCUM, "code": unit}}]}]
            made.append(request)
        for i, text in enumerate(self.chart["statements"]):
            made.append({"resourceType": "MedicationStatement", "id": f"{self.patient}-ms{i}", "status": "active",
                         "subject": subject, "medicationCodeableConcept": {"text": text}})
        for i, text in enumerate(self.chart["allergies"]):
            made.append({"resourceType": "AllergyIntolerance", "id": f"{self.patient}-ai{i}", "patient": subject,
                         "clinicalStatus": {"coding": [{"system": _CLINICAL.format("allergyintolerance"),
                                                        "code": "active"}]},
                         "code": {"text": text}})
        for i, text in enumerate(self.chart["conditions"]):
            made.append({"resourceType": "Condition", "id": f"{self.patient}-c{i}", "subject": subject,
                         "clinicalStatus": {"coding": [{"system": _CLINICAL.format("condition"), "code": "active"}]},
                         "code": {"text": text}})
        return made

    def seed(self, fhir_base: str) -> None:
        for resource in self.resources():
            response = httpx.put(f"{fhir_base}/{resource['resourceType']}/{resource['id']}", json=resource,
                                 headers={"Content-Type": "application/fhir+json"}, timeout=30)
            assert response.status_code in (200, 201), f"{resource['resourceType']}: {response.status_code} {response.text}"


def charted_dictations() -> list[ChartedDictation]:
    found = []
    for path, chart in yaml.safe_load(CHARTS.read_text()).items():
        name = Path(path).name
        found.append(ChartedDictation(name=name, audio=(FIXTURES / f"{path}.ogg").read_bytes(),
                                      reference=(FIXTURES / f"{path}.txt").read_text().strip(),
                                      patient="vocab-" + name.removeprefix("dictation_").replace("_", "-"),
                                      chart=chart, drugs=chart["drugs"]))
    return found


def drugs_heard(drugs: list[str], transcript: str) -> int:
    """How many of the drug mentions the transcript has (each name counted at most as often as mentioned)."""
    heard = 0
    for name in set(drugs):
        said = drugs.count(name)
        heard += min(said, len(re.findall(rf"\b{re.escape(name)}\b", transcript, re.IGNORECASE)))
    return heard
