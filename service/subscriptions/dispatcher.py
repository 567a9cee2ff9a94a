"""Notifications are answered at once and worked on here: a bounded in-process queue (a full one answers 503 and
the EHR redelivers; nothing is lost that the EHR does not still hold), a few workers, and the lease recovery
loop. Every source is read from the EHR by id: a pushed copy is never trusted for patient or audio.

Draining (SIGTERM) hands the queue back to the EHR as ``ready`` Tasks, which the other replicas' recovery loops
take at once, and gives jobs in hand until the deadline; a job still running then is released the same way."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from service import metrics
from service.config import SubscriptionSettings
from service.errors import Overloaded, ScribeError
from service.logs import event
from service.subscriptions.jobs import JobRunner
from service.subscriptions.notifications import AUDIO_SOURCES, Work

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, runner: JobRunner, settings: SubscriptionSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.queue: asyncio.Queue[Work] = asyncio.Queue(settings.queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._recovery_task: asyncio.Task[None] | None = None
        self._busy: set[asyncio.Task[None]] = set()  # workers (and the recovery loop) in the middle of a job
        self._draining = False  # a busy worker stops after its job

    def submit(self, work: Work) -> None:
        try:
            self.queue.put_nowait(work)
            metrics.SUBSCRIPTION_QUEUE.set(self.queue.qsize())
        except asyncio.QueueFull:
            raise Overloaded("too many notifications waiting; deliver again later", retry_after_s=30,
                             reason="subscription_queue") from None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.settings.workers)]
        self._recovery_task = asyncio.create_task(self._recovery())
        self._tasks.append(self._recovery_task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, deadline: float) -> None:
        """Take no more work; hand the unstarted back to the EHR; let jobs in hand run until ``deadline``
        (time.monotonic()), then cancel them (each releases its Task)."""
        self._draining = True
        for task in self._tasks:
            if task not in self._busy:
                task.cancel()  # idle workers and the recovery loop
        handed = 0
        while not self.queue.empty():
            work = self.queue.get_nowait()
            metrics.SUBSCRIPTION_QUEUE.set(self.queue.qsize())
            try:
                await asyncio.wait_for(self.handle(work, act=self.runner.hand_back),
                                       max(deadline - time.monotonic(), 0.1))
                handed += 1
            except (ScribeError, TimeoutError) as failure:  # the EHR still holds the recording: redelivery finds it
                event(log, "subscription.hand_back_failed", level=logging.WARNING,
                      problem=getattr(failure, "slug", "timeout"))
        busy, released = list(self._busy), 0
        if busy:
            _, running = await asyncio.wait(busy, timeout=max(deadline - time.monotonic(), 0))
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            released = len(running)
        event(log, "subscription.drained", handed_back=handed, jobs_finished=len(busy) - released,
              jobs_released=released)

    async def _worker(self) -> None:
        while not self._draining:
            work = await self.queue.get()
            metrics.SUBSCRIPTION_QUEUE.set(self.queue.qsize())
            current = asyncio.current_task()
            assert current is not None
            self._busy.add(current)
            try:
                await self.handle(work)
            except ScribeError as failure:  # the EHR unreachable: its notification or the recovery loop brings it back
                event(log, "subscription.work_failed", level=logging.WARNING, problem=failure.slug)
            except Exception as failure:  # noqa: BLE001 (a worker must outlive any one job)
                event(log, "subscription.work_failed", level=logging.ERROR, exc_type=type(failure).__name__)
            finally:
                self._busy.discard(current)
                self.queue.task_done()

    async def handle(self, work: Work,
                     act: Callable[..., Awaitable[None]] | None = None) -> None:
        """``act(source, only_recordings=...)``: do the job (default) or hand it back (draining)."""
        act = act or self.runner.run
        references = work.references + [f"{r['resourceType']}/{r['id']}" for r in work.resources if r.get("id")]
        for reference in dict.fromkeys(references):
            if reference.split("/")[0] not in AUDIO_SOURCES:
                continue
            source = await self.runner.source(reference)
            if source is not None:
                await act(source, only_recordings=False)
        if work.query:
            kind, _, query = self.settings.query.partition("?")
            # Which recordings still need a job decides claims: the answer must be current (fresh).
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
