"""Runs the sections stage off the event loop, on ``sections.workers`` threads, each with its own Sectioner.

spaCy/medspaCy objects are not safe to share between threads, so the Sectioners (one per thread, ~0.1 s and a few
MiB each) are built up front from the same rules and each thread takes one for good. Every text sectioned anywhere
(``/v1/sections``, a dictation's draft, a commit) comes through ``structure``, which enforces in one place:

- the length limit, ``max_chars``: a longer text is refused (422) before any work;
- a bounded queue: with more than ``workers * 4`` texts waiting for a thread, the next one is refused (503
  ``overloaded`` + Retry-After) instead of piling up;
- a time budget per text, ``timeout_s`` (waiting included): past it the caller gets 503 ``sections-timeout`` +
  Retry-After. A text still waiting is dropped; one already running finishes on its thread in the background (a
  thread cannot be stopped), which sectioning in linear time keeps short.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue

from service.config import SectionsSettings
from service.errors import Overloaded, ScribeError, Unprocessable
from service.logs import event
from service.sections.note import StructuredNote
from service.sections.pipeline import Sectioner
from service.sections.rules import load_rules

log = logging.getLogger(__name__)
QUEUE_PER_WORKER = 4  # texts allowed to wait per sectioning thread


class SectionsTimeout(ScribeError):
    status, slug, title = 503, "sections-timeout", "Sectioning took too long"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class SectionsWorker:
    def __init__(self, settings: SectionsSettings,
                 sectioner: Sectioner | Callable[[], Sectioner] | None = None) -> None:
        """``sectioner``: a Sectioner whose rules to use (the instance itself stays with its owner), a factory, or
        None for the rules in ``settings.rules_file``."""
        if sectioner is None:
            build: Callable[[], Sectioner] = functools.partial(Sectioner, load_rules(settings.rules_file))
        elif isinstance(sectioner, Sectioner):
            build = functools.partial(Sectioner, sectioner.rules)
        else:
            build = sectioner
        self.settings = settings
        self.max_waiting = settings.workers * QUEUE_PER_WORKER
        self._retry_after_s = max(1, math.ceil(settings.timeout_s))
        self._unclaimed: SimpleQueue[Sectioner] = SimpleQueue()
        for _ in range(settings.workers):
            self._unclaimed.put(build())
        self._local = threading.local()
        self._lock = threading.Lock()
        self._waiting = 0  # submitted, not yet started; under _lock (the event loop adds, the threads take)
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="sections",
                                            initializer=self._claim_sectioner)

    @property
    def waiting(self) -> int:
        return self._waiting

    async def structure(self, text: str) -> StructuredNote:
        limit = self.settings.max_chars
        if len(text) > limit:
            raise Unprocessable(f"the text has {len(text)} characters; the limit is {limit}")
        with self._lock:
            admitted = self._waiting < self.max_waiting
            if admitted:
                self._waiting += 1
        if not admitted:
            event(log, "sections.rejected", level=logging.WARNING, waiting=self.max_waiting,
                  workers=self.settings.workers)
            raise Overloaded(f"{self.max_waiting} texts are already waiting to be sectioned; retry later",
                             retry_after_s=self._retry_after_s, reason="sections_queue")
        job = self._executor.submit(self._structure, text)
        result = asyncio.wrap_future(job)
        try:
            # Shielded: on timeout (or if the caller goes away) the thread is not interrupted mid-text.
            return await asyncio.wait_for(asyncio.shield(result), self.settings.timeout_s)
        except TimeoutError:
            dropped = self._drop(job, result)
            event(log, "sections.timeout", level=logging.WARNING, chars=len(text), timeout_s=self.settings.timeout_s,
                  still_running=not dropped)
            raise SectionsTimeout(
                f"sectioning a text of {len(text)} characters took longer than {self.settings.timeout_s:g} s; "
                f"retry later", retry_after_s=self._retry_after_s) from None
        except asyncio.CancelledError:
            self._drop(job, result)
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _claim_sectioner(self) -> None:  # once per thread, as the executor starts it
        self._local.sectioner = self._unclaimed.get_nowait()

    def _structure(self, text: str) -> StructuredNote:  # on a sectioning thread
        with self._lock:
            self._waiting -= 1
        return self._local.sectioner.structure(text)

    def _drop(self, job: Future[StructuredNote], result: asyncio.Future[StructuredNote]) -> bool:
        """Nobody waits for ``job`` any more: drop it if it has not started (True); otherwise let it finish."""
        result.add_done_callback(lambda f: f.cancelled() or f.exception())  # its outcome is nobody's concern now
        if job.cancel():
            with self._lock:
                self._waiting -= 1
            return True
        return False
