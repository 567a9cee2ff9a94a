"""Writes a note and its AuditEvent: atomically, idempotently, never twice.

- One transaction Bundle: the DocumentReference as a conditional create on its identifier, the AuditEvent
  pointing at it by urn:uuid. Either both exist afterwards or neither.
- Concurrent writes of the same identifier are serialized inside this process (HAPI can create duplicates
  under concurrent identical conditional creates).
- Before any retry, the identifier is searched first: a timed-out transaction may have committed, and a blind
  retry racing it could duplicate the note.
- Servers without transactions get a conditional create then the AuditEvent, reported as not atomic.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from pydantic import BaseModel

from service import metrics
from service.documents.draft import DictationContext, Identifier
from service.documents.resources import WritePlan
from service.errors import ScribeError, Unprocessable
from service.fhir.client import FhirClient, FhirRejected, parse_location
from service.fhir.retrying import retrying
from service.logs import event

log = logging.getLogger(__name__)


class WriteResult(BaseModel):
    document_reference_id: str
    document_reference_url: str
    audit_event_id: str | None
    created: bool  # False: a note with this identifier already existed (a retry); nothing new was written
    atomic: bool  # False: the server lacks transactions; the note and its audit were two requests
    fhir_base_url: str


class Conflict(ScribeError):
    status, slug, title = 409, "conflict", "Conflicting note"


class NoteWriter:
    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def check_context(self, ctx: DictationContext) -> None:
        """The patient and encounter exist, and the encounter is this patient's."""
        if await self.client.read("Patient", ctx.patient) is None:
            raise Unprocessable(f"Patient/{ctx.patient} does not exist on the FHIR server")
        if ctx.encounter is None:
            return
        encounter = await self.client.read("Encounter", ctx.encounter)
        if encounter is None:
            raise Unprocessable(f"Encounter/{ctx.encounter} does not exist on the FHIR server")
        subject = (encounter.get("subject") or {}).get("reference", "")
        if parse_subject(subject) != ctx.patient:
            raise Unprocessable(f"Encounter/{ctx.encounter} belongs to a different patient than Patient/{ctx.patient}")

    async def write(self, plan: WritePlan, identifier: Identifier, request_id: str) -> WriteResult:
        key = repr(sorted(plan.criteria.items()))  # identifier and patient
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                result = await self._write(plan, identifier, request_id)
            except Conflict:
                metrics.NOTES_WRITTEN.labels("conflict").inc()
                raise
            except ScribeError:
                metrics.NOTES_WRITTEN.labels("failed").inc()
                raise
        metrics.NOTES_WRITTEN.labels("created" if result.created else "existing").inc()
        return result

    async def _write(self, plan: WritePlan, identifier: Identifier, request_id: str) -> WriteResult:
        def repeatable(failure: BaseException) -> bool:  # never after the server said no, or the note differs
            return not isinstance(failure, (FhirRejected, Conflict))

        async for attempt in retrying(self.client.settings, repeatable):
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1:
                    existing = await self._find(plan)
                    if existing is not None:  # an earlier attempt committed after all
                        return await self._existing(existing, plan, atomic=True)
                try:
                    if await self.client.supports_transaction():
                        return await self._transaction(plan)
                    return await self._two_step(plan, request_id)
                except ScribeError as failure:
                    if repeatable(failure):
                        event(log, "note.write_failed", level=logging.WARNING, attempt=number, problem=failure.slug)
                    raise
        raise AssertionError("unreachable")

    async def _transaction(self, plan: WritePlan) -> WriteResult:
        response = await self.client.send("POST", "", json=plan.bundle)
        if response.status_code != 200:
            raise self.client.error_for(response)
        entries = response.json().get("entry", [])
        if len(entries) != 2:
            raise self.client.error_for(response)
        doc_response, audit_response = entries[0].get("response", {}), entries[1].get("response", {})
        doc = parse_location(doc_response.get("location", ""))
        created = doc_response.get("status", "").startswith("201")
        if not created:
            existing = entries[0].get("resource") or await self.client.read("DocumentReference", doc.id)
            self._same_note(existing, plan)
        return self._result(doc.id, parse_location(audit_response.get("location", "")).id, created, atomic=True)

    async def _two_step(self, plan: WritePlan, request_id: str) -> WriteResult:
        """No transactions on this server: conditional create, then the AuditEvent naming the real id."""
        condition = plan.bundle["entry"][0]["request"]["ifNoneExist"]  # identifier and patient
        response = await self.client.send("POST", "DocumentReference", json=plan.document_reference,
                                          headers={"If-None-Exist": condition})
        if response.status_code not in (200, 201):
            raise self.client.error_for(response)
        doc = parse_location(response.headers.get("location") or response.headers.get("content-location") or
                             f"DocumentReference/{response.json().get('id', '')}")
        if response.status_code == 200:
            self._same_note(response.json(), plan)
        audit = {**plan.audit_event}
        audit["entity"] = [dict(e) for e in audit["entity"]]
        audit["entity"][1] = {**audit["entity"][1], "what": {"reference": f"DocumentReference/{doc.id}"}}
        audit_response = await self.client.send("POST", "AuditEvent", json=audit)
        if audit_response.status_code != 201:
            raise self.client.error_for(audit_response)
        audit_id = parse_location(audit_response.headers.get("location") or
                                  f"AuditEvent/{audit_response.json().get('id', '')}").id
        return self._result(doc.id, audit_id, response.status_code == 201, atomic=False)

    async def _find(self, plan: WritePlan) -> dict[str, Any] | None:
        try:
            found = await self.client.search("DocumentReference", plan.criteria, fresh=True)
        except ScribeError:
            return None  # still unreachable: the next attempt will say so
        return found[0] if found else None

    async def _existing(self, existing: dict[str, Any], plan: WritePlan, atomic: bool) -> WriteResult:
        self._same_note(existing, plan)
        return self._result(existing["id"], None, created=False, atomic=atomic)

    def _same_note(self, existing: dict[str, Any], plan: WritePlan) -> None:
        """A retry finds its own note; a different text under the same identifier must not vanish silently.
        The match was already limited to this patient; the encounter must be the same too. The answer names no
        id: the caller learns only that this identifier is taken for this patient."""
        ours, theirs = plan.document_reference, existing
        if (_text(ours) != _text(theirs) or ours.get("docStatus") != theirs.get("docStatus")
                or _codes(ours.get("type")) != _codes(theirs.get("type"))
                or _reference(ours.get("subject")) != _reference(theirs.get("subject"))
                or _encounters(ours) != _encounters(theirs)):
            raise Conflict("a note with this identifier already exists for this patient with a different text, "
                           "status, note type or encounter; nothing was written (use a new Idempotency-Key to "
                           "write another note)")

    def _result(self, doc_id: str, audit_id: str | None, created: bool, atomic: bool) -> WriteResult:
        base = self.client.base_url
        event(log, "note.written", created=created, atomic=atomic)
        return WriteResult(document_reference_id=doc_id, document_reference_url=f"{base}/DocumentReference/{doc_id}",
                           audit_event_id=audit_id, created=created, atomic=atomic, fhir_base_url=base)


def _text(document: dict[str, Any]) -> str | None:
    return ((document.get("content") or [{}])[0].get("attachment") or {}).get("data")


def _reference(value: Any) -> str | None:
    return value.get("reference") if isinstance(value, dict) else None


def _encounters(document: dict[str, Any]) -> list[str | None]:
    return [_reference(e) for e in (document.get("context") or {}).get("encounter") or []]


def _codes(concept: dict[str, Any] | None) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding", [])}


def parse_subject(reference: str) -> str | None:
    try:
        location = parse_location(reference)
    except ScribeError:
        return None
    return location.id if location.type == "Patient" else None

