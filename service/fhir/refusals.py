"""Audits refused authorizations in the EHR, in the background, with fhir-scribe's own identity.

Only 403s (a valid user asking for more than the token allows, e.g. another patient) are audited: they are the
security events a privacy officer looks for. A 401 is logged, not audited: anyone can send bad tokens, and writing
an AuditEvent for each would let them flood the EHR. The refused caller's token is never used for the write.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from service.config import FhirSettings
from service.documents.resources import refusal_audit_event
from service.errors import ScribeError
from service.fhir.client import FhirClient
from service.logs import event

log = logging.getLogger(__name__)


class RefusalAuditor:
    def __init__(self, client: FhirClient, settings: FhirSettings, has_service_identity: bool) -> None:
        self.client = client
        self.settings = settings
        self.enabled = has_service_identity
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, *, user: str | None, client_id: str | None, patient: str | None, request_id: str) -> None:
        if not self.enabled:
            event(log, "audit.refusal_skipped", reason="no service identity to write with")
            return
        resource = refusal_audit_event(self.settings, user=user, client_id=client_id, patient=patient,
                                       request_id=request_id)
        # A fresh context: no on-behalf-of token from the refused request can leak into this write.
        task = asyncio.get_running_loop().create_task(self._write(resource), context=contextvars.Context())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, resource: dict) -> None:
        try:
            response = await self.client.send("POST", "AuditEvent", json=resource)
            ok = response.status_code == 201
            event(log, "audit.refusal_written" if ok else "audit.refusal_failed",
                  level=logging.INFO if ok else logging.WARNING, status=response.status_code)
        except ScribeError as failure:
            event(log, "audit.refusal_failed", level=logging.WARNING, problem=failure.slug)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)
