"""Notifications are accepted into the EHR before they are answered, and worked on here.

Accepting a notification records each recording's job as a ``ready`` Task in the EHR (a conditional create, so a
redelivery or another replica's copy finds it) before the EHR hears 200: from then on the job survives anything
that happens to this process, SIGKILL included, because any replica's recovery loop takes ``ready`` Tasks. The
in-process queue only lets this replica start at once; a full queue drops nothing the EHR does not hold. An EHR
that cannot be reached while accepting gets a 503 and redelivers. Every source is read from the EHR by id: a pushed
copy is never trusted for patient or audio.

"Something changed" notifications (no ids) are queued as a search for later: the EHR repeats those (heartbeats).
Draining (SIGTERM) leaves the accepted jobs to the other replicas, hands queued searches back the same way, and
gives jobs in hand until the deadline; a job still running then is released back to ``ready``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from service import metrics
from service.config import SubscriptionSettings
from service.errors import Overloaded, ScribeError
from service.logs import event
from service.subscriptions.jobs import JobRunner
from service.subscriptions.notifications import AUDIO_SOURCES, Work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A job recorded in the EHR as a ready Task, with its source as read when it was accepted."""

    task: dict[str, Any]
    source: dict[str, Any]


class Dispatcher:
    def __init__(self, runner: JobRunner, settings: SubscriptionSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.queue: asyncio.Queue[Accepted | Work] = asyncio.Queue(settings.queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()  # workers (and the recovery loop) in the middle of a job
        self._draining = False  # a busy worker stops after its job

    async def accept(self, work: Work) -> int:
        """Record the notification's jobs in the EHR (ready Tasks) and queue them here; how many are new."""
        accepted = 0
        for reference in self._references(work):
            source = await self.runner.source(reference)
            if source is None:
                continue
            task = await self.runner.accept(source)
            if task is None:
                continue  # ours, or the job exists already (a redelivery, another replica's copy)
            accepted += 1
            try:
                self.queue.put_nowait(Accepted(task, source))
            except asyncio.QueueFull:  # the Task is in the EHR: a recovery loop takes it
                event(log, "subscription.queue_full", level=logging.WARNING)
        if work.query:
            try:
                self.queue.put_nowait(Work(query=True, kind=work.kind))
            except asyncio.QueueFull:
                raise Overloaded("too many notifications waiting; deliver again later", retry_after_s=30,
                                 reason="subscription_queue") from None
        metrics.SUBSCRIPTION_QUEUE.set(self.queue.qsize())
        return accepted

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._recovery()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, deadline: float) -> None:
        """Take no more work; leave accepted jobs to the other replicas; hand queued searches back to the EHR; let
        jobs in hand run until ``deadline`` (time.monotonic()), then cancel them (each releases its Task)."""
        self._draining = True
        for task in self._tasks:
            if task not in self._busy:
                task.cancel()  # idle workers and the recovery loop
        left = 0
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, Accepted):
                left += 1  # already a ready Task in the EHR
                metrics.SUBSCRIPTION_JOBS.labels("handed_back").inc()
                continue
            try:
                await asyncio.wait_for(self._search(act=self.runner.hand_back),
                                       max(deadline - time.monotonic(), 0.1))
            except (ScribeError, TimeoutError) as failure:  # the EHR repeats such notifications
                event(log, "subscription.hand_back_failed", level=logging.WARNING,
                      problem=getattr(failure, "slug", "timeout"))
        metrics.SUBSCRIPTION_QUEUE.set(0)
        busy, released = list(self._busy), 0
        if busy:
            _, running = await asyncio.wait(busy, timeout=max(deadline - time.monotonic(), 0))
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            released = len(running)
        event(log, "subscription.drained", handed_back=left, jobs_finished=len(busy) - released,
              jobs_released=released)

    async def _worker(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._draining:
            item = await self.queue.get()
            metrics.SUBSCRIPTION_QUEUE.set(self.queue.qsize())
            self._busy.add(current)
            try:
                if isinstance(item, Accepted):
                    await self.runner.take(item.task, item.source)
                else:
                    await self._search()
            except ScribeError as failure:  # the EHR unreachable: the Task stays for the recovery loop
                event(log, "subscription.work_failed", level=logging.WARNING, problem=failure.slug)
            except Exception as failure:  # noqa: BLE001 (a worker must outlive any one job)
                event(log, "subscription.work_failed", level=logging.ERROR, exc_type=type(failure).__name__)
            finally:
                self._busy.discard(current)
                self.queue.task_done()

    def _references(self, work: Work) -> list[str]:
        references = work.references + [f"{r['resourceType']}/{r['id']}" for r in work.resources if r.get("id")]
        return [r for r in dict.fromkeys(references) if r.split("/")[0] in AUDIO_SOURCES]

    async def _search(self, act: Callable[..., Awaitable[None]] | None = None) -> None:
        """A "something changed" notification: the recordings the configured query finds, each done (or, with
        ``act`` = hand_back, recorded as a ready Task). The answer decides claims: it must be current (fresh)."""
        act = act or self.runner.run
        kind, _, query = self.settings.query.partition("?")
        for source in await self.runner.client.search(kind, dict(parse_qsl(query)), fresh=True):
            await act(source, only_recordings=True)

    async def _recovery(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._draining:
            self._busy.add(current)
            try:
                taken = await self.runner.recover()
                if taken:
                    event(log, "subscription.recovered", tasks=taken)
            except ScribeError as failure:
                event(log, "subscription.recovery_failed", level=logging.WARNING, problem=failure.slug)
            except Exception as failure:  # noqa: BLE001
                event(log, "subscription.recovery_failed", level=logging.ERROR, exc_type=type(failure).__name__)
            finally:
                self._busy.discard(current)
            if self._draining:
                return
            await asyncio.sleep(self.settings.recovery_interval_s)
