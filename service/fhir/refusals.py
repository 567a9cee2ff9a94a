"""Audits refused authorizations in the EHR, in the background, with fhir-scribe's own identity.

Only 403s (a valid user asking for more than the token allows, e.g. another patient) are audited: they are the
security events a privacy officer looks for. A 401 is logged, not audited: anyone can send bad tokens, and writing
an AuditEvent for each would let them flood the EHR. The refused caller's token is never used for the write.
A valid caller can repeat 403s as fast as it likes, so audits are also limited per caller (``per_minute``); the
ones dropped are counted and the count is logged once the caller's minute is over, so the flood itself shows.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass

from service.config import FhirSettings
from service.documents.resources import refusal_audit_event
from service.errors import ScribeError
from service.fhir.client import FhirClient
from service.logs import event

log = logging.getLogger(__name__)


_WINDOW_S = 60.0
_MAX_CALLERS = 10_000  # windows kept at once; the oldest go first (memory stays bounded under any caller count)


@dataclass
class _Window:
    started: float
    written: int = 0
    dropped: int = 0


class RefusalAuditor:
    def __init__(self, client: FhirClient, settings: FhirSettings, has_service_identity: bool,
                 per_minute: int = 10) -> None:
        self.client = client
        self.settings = settings
        self.enabled = has_service_identity
        self.per_minute = per_minute
        self._windows: dict[str, _Window] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, *, user: str | None, client_id: str | None, patient: str | None, request_id: str) -> None:
        if not self.enabled:
            event(log, "audit.refusal_skipped", reason="no service identity to write with")
            return
        if not self._admit(f"{user}|{client_id}"):
            return
        resource = refusal_audit_event(self.settings, user=user, client_id=client_id, patient=patient,
                                       request_id=request_id)
        # A fresh context: no on-behalf-of token from the refused request can leak into this write.
        task = asyncio.get_running_loop().create_task(self._write(resource), context=contextvars.Context())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _admit(self, caller: str) -> bool:
        now = time.monotonic()
        window = self._windows.get(caller)
        if window is None or now - window.started >= _WINDOW_S:
            if window is not None and window.dropped:
                event(log, "audit.refusals_dropped", level=logging.WARNING, dropped=window.dropped,
                      written=window.written, window_s=_WINDOW_S)
            self._windows.pop(caller, None)
            if len(self._windows) >= _MAX_CALLERS:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[caller] = _Window(now)
        if window.written >= self.per_minute:
            window.dropped += 1
            if window.dropped == 1:
                event(log, "audit.refusals_throttled", level=logging.WARNING, per_minute=self.per_minute)
            return False
        window.written += 1
        return True

    async def _write(self, resource: dict) -> None:
        try:
            response = await self.client.send("POST", "AuditEvent", json=resource)
            ok = response.status_code == 201
            event(log, "audit.refusal_written" if ok else "audit.refusal_failed",
                  level=logging.INFO if ok else logging.WARNING, status=response.status_code)
        except ScribeError as failure:
            event(log, "audit.refusal_failed", level=logging.WARNING, problem=failure.slug)

    async def drain(self) -> None:
        dropped = sum(w.dropped for w in self._windows.values())
        if dropped:
            event(log, "audit.refusals_dropped", level=logging.WARNING, dropped=dropped, window_s=_WINDOW_S)
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)
