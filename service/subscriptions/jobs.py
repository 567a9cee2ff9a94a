"""One job per recording version, tracked as a Task in the EHR.

Claiming is a conditional create of the Task (identifier = source type/id/version) inside a transaction, so a
redelivered notification or a second replica finds it and does nothing. The note is written with an identifier
derived from the Task's, so even a job redone after a crash writes it once. A Task left in-progress past its
lease (its replica died) is taken over with an If-Match update: of two replicas trying, one wins. A notification's
jobs are recorded as ``ready`` Tasks before it is answered (service/subscriptions/dispatcher.py), and any replica
takes a ready Task the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from service import metrics
from service.config import Settings
from service.dictation import DictationService
from service.documents.draft import DictationContext
from service.errors import Overloaded, ScribeError
from service.fhir.client import FhirClient, FhirTimeout, FhirUnavailable, parse_location
from service.logs import event
from service.review.flags import ReviewFlag, clock
from service.subscriptions.audio_source import attachment, context_of, fetch_audio, recording_end

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, settings: Settings, dictations: DictationService, client: FhirClient) -> None:
        self.settings = settings
        self.subs = settings.subscriptions
        self.dictations = dictations
        self.client = client

    async def source(self, reference: str) -> dict[str, Any] | None:
        kind, _, rid = reference.partition("/")
        return await self.client.read(kind, rid) if kind and rid else None

    def ours(self, resource: dict[str, Any]) -> bool:
        """A note this service wrote (it matches DocumentReference subscriptions too)."""
        system = self.settings.fhir.identifier_system
        return any(i.get("system") == system for i in resource.get("identifier", []))

    async def run(self, resource: dict[str, Any], *, only_recordings: bool) -> None:
        """``only_recordings``: skip non-audio sources quietly (a query's results) rather than fail their job."""
        if self.ours(resource) or (only_recordings and attachment(resource) is None):
            return
        task = await self.claim(resource)
        if task is not None:
            await self.execute(task, resource)
        else:
            metrics.SUBSCRIPTION_JOBS.labels("already_claimed").inc()

    async def accept(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """Record the job as a ready Task (any replica may take it); None when it is ours or already exists."""
        if self.ours(resource):
            return None
        return await self.claim(resource, status="ready")

    async def take(self, task: dict[str, Any], source: dict[str, Any] | None) -> bool:
        """Take a ready (or stale) Task with an If-Match update to in-progress, then do it; False when another
        replica took it first. ``source``: the recording, read again from the EHR when None."""
        version = (task.get("meta") or {}).get("versionId")
        renewed = {**task, "status": "in-progress", "lastModified": _now()}
        renewed.pop("meta", None)
        response = await self.client.send("PUT", f"Task/{task['id']}", json=renewed,
                                          headers={"If-Match": f'W/"{version}"'})
        if response.status_code in (409, 412):
            metrics.SUBSCRIPTION_JOBS.labels("already_claimed").inc()
            return False
        if response.status_code not in (200, 201):
            raise self.client.error_for(response)
        taken = response.json() if response.content else renewed
        source = source if source is not None else await self.source(task["focus"]["reference"])
        if source is None:
            await self._finish(taken, "failed", reason="the recording no longer exists")
            return True
        await self.execute(taken, source)
        return True

    async def hand_back(self, resource: dict[str, Any], *, only_recordings: bool) -> None:
        """Draining: record the job as a ``ready`` Task for another replica, instead of doing it here."""
        if self.ours(resource) or (only_recordings and attachment(resource) is None):
            return
        if await self.claim(resource, status="ready") is not None:
            metrics.SUBSCRIPTION_JOBS.labels("handed_back").inc()

    async def claim(self, resource: dict[str, Any], status: str = "in-progress") -> dict[str, Any] | None:
        """The new Task if this call created it; None if the job exists (done, failed or in hand elsewhere).
        ``status`` "ready": the job is recorded for any replica to take (see ``recover``)."""
        version = (resource.get("meta") or {}).get("versionId", "1")
        identifier = {"system": self.subs.task_system,
                      "value": f"{resource['resourceType']}/{resource['id']}/_history/{version}"}
        task = {"resourceType": "Task", "identifier": [identifier], "status": status, "intent": "order",
                "focus": {"reference": f"{resource['resourceType']}/{resource['id']}"},
                "owner": {"identifier": {"system": "urn:fhir-scribe:device",
                                         "value": self.settings.fhir.device_name},
                          "display": self.settings.fhir.device_name},
                "description": "Transcribe this recording into a clinical note (fhir-scribe)",
                "authoredOn": _now(), "lastModified": _now()}
        subject = (resource.get("subject") or {}).get("reference", "")
        if subject.startswith("Patient/"):
            task["for"] = {"reference": subject}
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": task,
            "request": {"method": "POST", "url": "Task",
                        "ifNoneExist": f"identifier={identifier['system']}|{identifier['value']}"}}]}
        response = await self.client.send("POST", "", json=bundle, retry=True)  # conditional: safe to repeat
        if response.status_code == 409:
            return None  # HAPI, two identical conditional creates at once: the other one has it
        if response.status_code != 200:
            raise self.client.error_for(response)
        entry = (response.json().get("entry") or [{}])[0].get("response", {})
        if not str(entry.get("status", "")).startswith("201"):
            return None
        location = parse_location(entry.get("location", ""))
        return await self.client.read("Task", location.id)

    async def execute(self, task: dict[str, Any], resource: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            patient, encounter, author = context_of(resource)
            audio = await fetch_audio(self.client, resource, self.settings.audio.max_upload_bytes)
            ctx = DictationContext(patient=patient, encounter=encounter, author=author,
                                   note_type=self.settings.fhir.default_note_type)
            key = "job:" + task["identifier"][0]["value"].replace("/", ":")
            draft = await self.dictations.draft(audio, ctx, doc_status="preliminary", idempotency_key=key[:128],
                                                request_id=task["id"],
                                                source=f"{resource['resourceType']}/{resource['id']}",
                                                ended_at=lambda seconds: recording_end(resource, seconds))
            result = await self.dictations.commit(draft, request_id=task["id"], from_client=False)
            # Nobody reviews a triggered note before it lands (docStatus preliminary): what the review screen
            # would have flagged goes with the job, for whoever signs the note.
            checks = [_check(flag) for flag in draft.flags]
            await self._finish(task, "completed", output=f"DocumentReference/{result.document_reference_id}",
                               notes=checks)
            outcome = "completed"
        except (FhirUnavailable, FhirTimeout):
            metrics.SUBSCRIPTION_JOBS.labels("ehr_unavailable").inc()
            raise  # the EHR is away: the Task stays in progress and the lease recovery redoes it
        except Overloaded:
            # This replica cannot do it now (draining, or full): not the recording's fault. Another replica (or this
            # one, later) takes it from ready at once.
            await self.release(task)
            metrics.SUBSCRIPTION_JOBS.labels("released").inc()
            event(log, "subscription.job", task=task["id"], outcome="released",
                  ms=round((time.perf_counter() - started) * 1000))
            return
        except asyncio.CancelledError:
            # The drain ran out of time: give the job back at once rather than after the lease (the note's
            # identifier comes from the Task's, so whoever redoes it cannot write it twice).
            await asyncio.shield(self.release(task))
            metrics.SUBSCRIPTION_JOBS.labels("released").inc()
            raise
        except ScribeError as failure:
            await self._finish(task, "failed", reason=f"{failure.title}: {failure.detail}")
            outcome = failure.slug
        metrics.SUBSCRIPTION_JOBS.labels("completed" if outcome == "completed" else "failed").inc()
        event(log, "subscription.job", task=task["id"], outcome=outcome,
              ms=round((time.perf_counter() - started) * 1000))

    async def release(self, task: dict[str, Any]) -> None:
        """Back to ``ready`` if still ours as we left it (If-Match): a replica takes it at its next recovery."""
        version = (task.get("meta") or {}).get("versionId")
        ready = {**task, "status": "ready", "lastModified": _now()}
        ready.pop("meta", None)
        try:
            await self.client.send("PUT", f"Task/{task['id']}", json=ready,
                                   headers={"If-Match": f'W/"{version}"'} if version else None)
        except ScribeError as failure:  # the lease recovery still takes it, later
            event(log, "subscription.release_failed", level=logging.WARNING, problem=failure.slug)

    async def _finish(self, task: dict[str, Any], status: str, output: str | None = None,
                      reason: str | None = None, notes: list[str] | None = None) -> None:
        done = {**task, "status": status, "lastModified": _now()}
        done.pop("meta", None)
        if output:
            done["output"] = [{"type": {"text": "clinical note"}, "valueReference": {"reference": output}}]
        if reason:
            done["statusReason"] = {"text": reason[:1000]}
        if notes:
            done["note"] = [{"text": text} for text in notes]
        response = await self.client.send("PUT", f"Task/{task['id']}", json=done, retry=True)
        if response.status_code not in (200, 201):
            raise self.client.error_for(response)

    async def recover(self) -> int:
        """Take over this service's Tasks that are ``ready`` (accepted by a replica that has not started them: busy,
        stopped or dead) or left in progress past the lease (its replica died mid-job), and do them; how many were
        taken. The searches must see
        the EHR as it is now (fresh), or a Task would be taken twice or missed."""
        cutoff = (datetime.now(timezone.utc) - timedelta(seconds=self.subs.lease_s)).isoformat(timespec="seconds")
        system = f"{self.subs.task_system}|"
        ready = await self.client.search("Task", {"identifier": system, "status": "ready", "_count": "20"},
                                         fresh=True)
        stale = await self.client.search("Task", {"identifier": system, "status": "in-progress",
                                                  "_lastUpdated": f"lt{cutoff}", "_count": "20"}, fresh=True)
        taken = 0
        for task in ready + stale:
            taken += await self.take(task, None)
        return taken


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check(flag: ReviewFlag) -> str:
    """A flag as a Task note: the words, where to listen in the recording (the EHR holds it), and why."""
    heard = f" (at {clock(flag.audio_start)}-{clock(flag.audio_end)} of the recording)" \
        if flag.audio_start is not None and flag.audio_end is not None else ""
    return f"Check '{flag.text}'{heard}: {flag.message}"
