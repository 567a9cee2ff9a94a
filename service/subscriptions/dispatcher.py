"""Notifications are answered at once and worked on here: a bounded in-process queue (a full one answers 503 and
the EHR redelivers; nothing is lost that the EHR does not still hold), a few workers, and the lease recovery
loop. Every source is read from the EHR by id: a pushed copy is never trusted for patient or audio."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl

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

    def submit(self, work: Work) -> None:
        try:
            self.queue.put_nowait(work)
        except asyncio.QueueFull:
            raise Overloaded("too many notifications waiting; deliver again later", retry_after_s=30) from None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._recovery()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            work = await self.queue.get()
            try:
                await self.handle(work)
            except ScribeError as failure:  # the EHR unreachable: its notification or the recovery loop brings it back
                event(log, "subscription.work_failed", level=logging.WARNING, problem=failure.slug)
            except Exception as failure:  # noqa: BLE001 (a worker must outlive any one job)
                event(log, "subscription.work_failed", level=logging.ERROR, exc_type=type(failure).__name__)
            finally:
                self.queue.task_done()

    async def handle(self, work: Work) -> None:
        references = work.references + [f"{r['resourceType']}/{r['id']}" for r in work.resources if r.get("id")]
        for reference in dict.fromkeys(references):
            if reference.split("/")[0] not in AUDIO_SOURCES:
                continue
            source = await self.runner.source(reference)
            if source is not None:
                await self.runner.run(source, only_recordings=False)
        if work.query:
            kind, _, query = self.settings.query.partition("?")
            for source in await self.runner.client.search(kind, dict(parse_qsl(query))):
                await self.runner.run(source, only_recordings=True)

    async def _recovery(self) -> None:
        while True:
            try:
                taken = await self.runner.recover()
                if taken:
                    event(log, "subscription.recovered", tasks=taken)
            except ScribeError as failure:
                event(log, "subscription.recovery_failed", level=logging.WARNING, problem=failure.slug)
            except Exception as failure:  # noqa: BLE001
                event(log, "subscription.recovery_failed", level=logging.ERROR, exc_type=type(failure).__name__)
            await asyncio.sleep(self.settings.recovery_interval_s)
