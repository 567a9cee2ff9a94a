"""Draft -> the FHIR R4 resources written for it: a DocumentReference (US Core clinical note shape) and its
AuditEvent (IHE BALP create shape), as one transaction Bundle.

Built with fhir.resources' R4B models (identical to R4 for these resources) so a structural mistake fails here,
in our code, not at the EHR. The AuditEvent carries references and identifiers only: no note text, no names.
"""

from __future__ import annotations

import base64
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from urllib.parse import quote

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference

from service.config import FhirSettings
from service.documents.draft import Draft

LOINC = "http://loinc.org"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
NOTE_PROFILE = "DictationNote"
AUDIT_PROFILE = "DictationAuditEvent"
TEXT_PLAIN = "text/plain; charset=utf-8"
XHTML = "application/xhtml+xml"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_QUERY_SAFE = "/:|\\,$"  # kept readable in ifNoneExist; & = # + % and spaces are encoded
_BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"


@dataclass(frozen=True)
class WritePlan:
    """The transaction to send, and the placeholders that tie its entries together."""

    bundle: dict[str, Any]
    document_reference: dict[str, Any]
    audit_event: dict[str, Any]
    document_full_url: str
    # What makes a note "this note": its identifier *for this patient*. A client may choose the identifier (an
    # Idempotency-Key), so the patient is part of the match: another patient's note can never be found by it.
    criteria: dict[str, str]


def document_reference(draft: Draft, settings: FhirSettings) -> dict[str, Any]:
    ctx = draft.context
    period_end = draft.dictated_at
    period_start = period_end - timedelta(seconds=draft.audio.duration_s)
    resource = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [f"{settings.profile_base}/{NOTE_PROFILE}"]},
        "identifier": [draft.identifier.model_dump()],
        "status": "current",
        "docStatus": draft.doc_status,
        "type": {"coding": [{"system": LOINC, "code": ctx.note_type,
                             "display": settings.note_types.get(ctx.note_type, ctx.note_type)}]},
        "category": [{"coding": [{"system": US_CORE_CATEGORY, "code": "clinical-note",
                                  "display": "Clinical Note"}]}],
        "subject": {"reference": f"Patient/{ctx.patient}"},
        "date": _instant(datetime.now(timezone.utc)),
        "author": [{"reference": ctx.author}],
        "description": f"Dictated note ({draft.doc_status}); transcribed by {draft.model} ({draft.model_revision})",
        "content": [
            {"attachment": {"contentType": TEXT_PLAIN, "language": draft.language,
                            "data": _b64(draft.text), "title": "Dictated note"},
             "format": {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                        "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient", "display": "mimeType Sufficient"}},
            {"attachment": {"contentType": XHTML, "language": draft.language,
                            "data": _b64(draft.note.render_xhtml()), "title": "Dictated note, sectioned"}},
        ],
        "context": {"period": {"start": _instant(period_start), "end": _instant(period_end)}},
    }
    if ctx.encounter:
        resource["context"]["encounter"] = [{"reference": f"Encounter/{ctx.encounter}"}]
    if settings.custodian:
        resource["custodian"] = {"reference": settings.custodian}
    if draft.source and draft.source.startswith("DocumentReference/"):
        resource["relatesTo"] = [{"code": "transforms", "target": {"reference": draft.source}}]
    return _checked(DocumentReference, resource)


def audit_event(draft: Draft, settings: FhirSettings, document_ref: str, request_id: str,
                outcome: str = "0") -> dict[str, Any]:
    """BALP 'create' audit of writing ``document_ref`` (a urn:uuid inside the transaction, or a literal id)."""
    device = {"identifier": {"system": "urn:fhir-scribe:device", "value": settings.device_name},
              "display": settings.device_name}
    resource = {
        "resourceType": "AuditEvent",
        "meta": {"profile": [f"{settings.profile_base}/{AUDIT_PROFILE}"]},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "create", "display": "create"}],
        "action": "C",
        "recorded": _instant(datetime.now(timezone.utc)),
        "outcome": outcome,
        "agent": [
            {"type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
             "who": device, "requestor": False,
             "network": {"address": socket.gethostname()[:64], "type": "1"}},
            {"type": {"coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]},
             "who": {"display": settings.base_url}, "requestor": False,
             "network": {"address": _host(settings.base_url), "type": "1"}},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                  "code": "humanuser", "display": "human user"}]},
             "who": {"reference": draft.context.author}, "requestor": True},
        ],
        "source": {"observer": device,
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": [
            {"what": {"reference": f"Patient/{draft.context.patient}"},
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                      "display": "Person"},
             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                      "display": "Patient"}},
            {"what": {"reference": document_ref},
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                      "display": "System Object"},
             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4",
                      "display": "Domain Resource"}},
            {"what": {"identifier": {"value": request_id}},
             "type": {"system": _BALP_ENTITY, "code": "XrequestId", "display": "request id"}},
        ],
    }
    return _checked(AuditEvent, resource)


def refusal_audit_event(settings: FhirSettings, *, user: str | None, client_id: str | None, patient: str | None,
                        request_id: str) -> dict[str, Any]:
    """An authorization refusal (403): who asked (the token's user and client), for which patient, failed.
    Outcome 4 (minor failure: the request was refused, nothing was read or written)."""
    device = {"identifier": {"system": "urn:fhir-scribe:device", "value": settings.device_name},
              "display": settings.device_name}
    requestor: dict[str, Any] = {"reference": user} if user else {"identifier": {"value": client_id or "unknown"}}
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "create", "display": "create"}],
        "action": "C",
        "recorded": _instant(datetime.now(timezone.utc)),
        "outcome": "4",
        "outcomeDesc": "authorization refused",
        "agent": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                  "code": "humanuser", "display": "human user"}]},
             "who": requestor, "requestor": True},
            {"type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
             "who": device, "requestor": False},
        ],
        "source": {"observer": device,
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": [{"what": {"identifier": {"value": request_id}},
                    "type": {"system": _BALP_ENTITY, "code": "XrequestId", "display": "request id"}}],
    }
    if patient:
        resource["entity"].insert(0, {
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}})
    return _checked(AuditEvent, resource)


def write_plan(draft: Draft, settings: FhirSettings, request_id: str) -> WritePlan:
    """One transaction: the note, created only if no note carries its identifier, and the audit of it."""
    doc = document_reference(draft, settings)
    doc_url, audit_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    audit = audit_event(draft, settings, doc_url, request_id)
    criteria = {"identifier": token_param(draft.identifier.system, draft.identifier.value),
                "subject": f"Patient/{draft.context.patient}"}
    condition = "&".join(f"{name}={quote(value, safe=_QUERY_SAFE)}" for name, value in criteria.items())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": doc_url, "resource": doc,
             "request": {"method": "POST", "url": "DocumentReference", "ifNoneExist": condition}},
            {"fullUrl": audit_url, "resource": audit, "request": {"method": "POST", "url": "AuditEvent"}},
        ],
    }
    return WritePlan(_checked(Bundle, bundle), doc, audit, doc_url, criteria)


def token_param(system: str, value: str) -> str:
    """``system|value`` for a token search, escaped per FHIR search rules (\\ , $ |), so no value can add a
    second alternative or a modifier to the criteria."""
    def escape(text: str) -> str:
        return re.sub(r"([\\,$|])", r"\\\1", text)

    return f"{escape(system)}|{escape(value)}"


def _checked(model: type, resource: dict[str, Any]) -> dict[str, Any]:
    return model.model_validate(resource).model_dump(mode="json", exclude_none=True)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or url)[:64]
