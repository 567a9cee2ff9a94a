"""The dictations' charts (tests/fixtures/speech_meds/charts.yaml, and for the review flags also
tests/fixtures/speech_review/charts.yaml) as FHIR resources for the test FHIR server, and drug-name recall."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from service.vocabulary.chart import chart_terms
from service.vocabulary.models import Term

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CHARTS = FIXTURES / "speech_meds" / "charts.yaml"  # the 8 dictations of speech/ and speech_meds/
REVIEW_CHARTS = FIXTURES / "speech_review" / "charts.yaml"  # 6 more, in other voices, for the review flags
_CLINICAL = "http://terminology.hl7.org/CodeSystem/{}-clinical"
_UCUM = "http://unitsofmeasure.org"
_UNIT_TEXT = {"[IU]": "units", "U": "units"}  # a dose's human-readable unit where it is not its UCUM code
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class ChartedDictation:
    name: str  # e.g. dictation_gout
    audio: bytes
    reference: str
    patient: str  # its patient's id on the FHIR server
    chart: dict
    drugs: list[str]  # drug mentions in the reference, with repeats
    voice: str | None = None  # the synthesizer voice, where the charts file records it
    dose_changes: tuple[str, ...] = ()  # dictated drugs whose dictated dose deliberately differs from the chart's

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
                "value": value, "unit": _UNIT_TEXT.get(unit, unit), "system": _UCUM, "code": unit}}]}]
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

    def terms(self) -> list[Term]:
        """The chart's terms as the service reads them from these resources on the FHIR server."""
        return terms_of(self.resources())

    def seed(self, fhir_base: str) -> None:
        for resource in self.resources():
            response = httpx.put(f"{fhir_base}/{resource['resourceType']}/{resource['id']}", json=resource,
                                 headers={"Content-Type": "application/fhir+json"}, timeout=30)
            assert response.status_code in (200, 201), f"{resource['resourceType']}: {response.status_code} {response.text}"


def terms_of(resources: Iterable[dict]) -> list[Term]:
    """Resources as a chart look-up finds them (grouped by type), as terms."""
    found: dict[str, list[dict]] = defaultdict(list)
    for resource in resources:
        found[resource["resourceType"]].append(resource)
    return chart_terms(dict(found))


def charted_dictations(charts: Path | str | Iterable[Path | str] = CHARTS) -> list[ChartedDictation]:
    """The dictations of one charts file or several (in order). By default speech_meds/charts.yaml: the eight
    dictations of speech/ and speech_meds/, which the vocabulary tests and bench expect."""
    found = []
    for file in [charts] if isinstance(charts, (Path, str)) else list(charts):
        for path, chart in yaml.safe_load(Path(file).read_text()).items():
            name = Path(path).name
            found.append(ChartedDictation(name=name, audio=(FIXTURES / f"{path}.ogg").read_bytes(),
                                          reference=(FIXTURES / f"{path}.txt").read_text().strip(),
                                          patient="vocab-" + name.removeprefix("dictation_").replace("_", "-"),
                                          chart=chart, drugs=chart["drugs"], voice=chart.get("voice"),
                                          dose_changes=tuple(chart.get("dose_changes") or ())))
    patients = [d.patient for d in found]
    assert len(set(patients)) == len(patients), f"patient ids repeat: {patients}"
    assert all(_FHIR_ID.fullmatch(p) for p in patients), f"not FHIR ids: {patients}"
    return found


def review_dictations() -> list[ChartedDictation]:
    """The 8 charted dictations and the 6 of speech_review/ (other voices, two deliberate dose changes): the set
    the review bench and review tests measure flags on."""
    return charted_dictations((CHARTS, REVIEW_CHARTS))


def drugs_heard(drugs: list[str], transcript: str) -> int:
    """How many of the drug mentions the transcript has (each name counted at most as often as mentioned)."""
    heard = 0
    for name in set(drugs):
        said = drugs.count(name)
        heard += min(said, len(re.findall(rf"\b{re.escape(name)}\b", transcript, re.IGNORECASE)))
    return heard
