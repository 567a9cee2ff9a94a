"""Runs the sections stage off the event loop, on one thread (it takes milliseconds; one thread keeps the spaCy
objects unshared)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from service.sections.note import StructuredNote
from service.sections.pipeline import Sectioner


class SectionsWorker:
    def __init__(self, sectioner: Sectioner) -> None:
        self.sectioner = sectioner
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sections")

    async def structure(self, text: str) -> StructuredNote:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.sectioner.structure, text)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
