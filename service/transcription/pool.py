"""Runs the engine off the event loop, with a bounded number of jobs admitted at once.

A full pool answers ``Overloaded`` (503 + Retry-After) immediately instead of piling requests up in memory: a
load balancer can then try another replica. Admission is taken once an upload has been received (uploads being
received are bounded by their own gate, service/api/multipart.py), so a slow sender never holds a transcription
slot; ``check_capacity`` lets a route refuse before reading an upload when the pool is already full.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from service import metrics
from service.audio import Audio
from service.errors import Overloaded
from service.logs import event
from service.transcription.engine import Cancelled, Transcriber
from service.transcription.transcript import Segment, TranscribeOptions, Transcript

log = logging.getLogger(__name__)
_DONE = object()
T = TypeVar("T")


class TranscriptionPool:
    def __init__(self, transcriber: Transcriber) -> None:
        settings = transcriber.settings
        self.transcriber = transcriber
        self._executor = ThreadPoolExecutor(max_workers=settings.num_workers, thread_name_prefix="transcribe")
        self._capacity = settings.num_workers + settings.max_queue
        self._retry_after_s = settings.retry_after_s
        self._admitted = 0  # touched only from the event loop thread
        self._waiting: set[concurrent.futures.Future[Transcript]] = set()  # submitted, no worker yet
        self._draining = False
        self._streams = 0
        self._num_workers = settings.num_workers
        self._on_workers = 0  # jobs handed to the executor and not finished (running or about to)

    @property
    def idle_workers(self) -> int:
        return max(0, self._num_workers - self._on_workers)

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def admitted(self) -> int:
        return self._admitted

    def check_capacity(self) -> None:
        """Overloaded (503) when every slot is taken; takes none."""
        if self._admitted >= self._capacity:
            event(log, "transcription.rejected", level=logging.WARNING, admitted=self._admitted,
                  capacity=self._capacity)
            raise Overloaded(f"all {self._capacity} transcription slots are busy; retry later",
                             retry_after_s=self._retry_after_s, reason="transcription_slots")

    @contextmanager
    def admission(self) -> Iterator[None]:
        self.check_capacity()
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    @contextmanager
    def stream_admission(self, max_streams: int) -> Iterator[None]:
        """A live stream: one of ``max_streams`` and, for its whole life, one transcription slot (its decodes run
        on the same workers as batch work, so each stream is capacity taken from them)."""
        if self._draining:
            raise _draining()
        if self._streams >= max_streams:
            raise Overloaded(f"all {max_streams} live streams are in use; retry later, or send the recording to "
                             "POST /v1/audio/transcriptions", retry_after_s=self._retry_after_s,
                             reason="realtime_streams")
        with self.admission():
            self._streams += 1
            metrics.REALTIME_STREAMS.set(self._streams)
            try:
                yield
            finally:
                self._streams -= 1
                metrics.REALTIME_STREAMS.set(self._streams)

    async def call(self, work: Callable[[Transcriber], T]) -> T:
        """A live stream's short engine call (a re-decode of its utterance), on the shared workers. Served while
        draining too: the stream was admitted, and finishes its utterance before it is closed."""
        self._on_workers += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(work, self.transcriber))
        finally:
            self._on_workers -= 1

    async def transcribe(self, audio: Audio, options: TranscribeOptions,
                         on_segment: Callable[[Segment], None] | None = None) -> Transcript:
        """``on_segment`` is called on the worker thread as each segment is decoded (e.g. a progress bar). If the
        caller is cancelled (a streaming client left), the worker stops at its next segment instead of decoding
        the rest of the recording for nobody."""
        started = time.perf_counter()
        stop = threading.Event()
        job = self._submit(functools.partial(self._run, audio, options, on_segment=on_segment,
                                             should_stop=stop.is_set))
        try:
            transcript = await self._result(job)
        except asyncio.CancelledError:
            stop.set()
            raise
        self._log_done(audio, transcript, started)
        return transcript

    async def stream(self, audio: Audio, options: TranscribeOptions) -> AsyncIterator[Segment | Transcript]:
        """Yield segments as the decoder produces them, then the whole transcript."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        job = self._submit(functools.partial(self._run, audio, options,
                                             on_segment=lambda s: loop.call_soon_threadsafe(queue.put_nowait, s),
                                             should_stop=stop.is_set))
        # Segments are queued with call_soon_threadsafe before the job's result is, so _DONE comes last.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
        try:
            while (item := await queue.get()) is not _DONE:
                yield item  # type: ignore[misc]
            transcript = await self._result(job)
            self._log_done(audio, transcript, started)
            yield transcript
        finally:
            stop.set()  # the client left early: let the worker stop at the next segment

    def drain(self) -> None:
        """SIGTERM: audio not yet on a worker is answered 503 now (nothing was done; its retry goes to another
        replica) instead of waiting behind the running jobs past the drain's deadline."""
        self._draining = True
        for job in list(self._waiting):
            job.cancel()  # only a job no worker has started can be cancelled

    def _submit(self, work: Callable[[], Transcript]) -> concurrent.futures.Future[Transcript]:
        if self._draining:
            raise _draining()
        job = self._executor.submit(work)
        self._on_workers += 1
        loop = asyncio.get_running_loop()
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._off_worker))
        metrics.TRANSCRIPTION_WAITING.inc()
        self._waiting.add(job)
        job.add_done_callback(self._left_queue)
        return job

    def _left_queue(self, job: concurrent.futures.Future[Transcript]) -> None:
        self._waiting.discard(job)
        if job.cancelled():  # never reached _run, which counts it out of the waiting gauge
            metrics.TRANSCRIPTION_WAITING.dec()

    def _off_worker(self) -> None:
        self._on_workers -= 1

    async def _result(self, job: concurrent.futures.Future[Transcript]) -> Transcript:
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            if job.cancelled() and self._draining:
                raise _draining() from None
            raise

    def _run(self, audio: Audio, options: TranscribeOptions, **hooks: object) -> Transcript:
        """On a worker thread: the engine, counted as running (it was counted as waiting until now)."""
        with metrics.running_transcription(self.transcriber.source.name, audio.duration_s):
            try:
                return self.transcriber.transcribe(audio, options, **hooks)  # type: ignore[arg-type]
            except Cancelled as stopped:
                event(log, "transcription.stopped", reason="caller-left", audio_s=round(audio.duration_s, 1),
                      decoded_s=round(stopped.decoded_s, 1))
                raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _log_done(self, audio: Audio, transcript: Transcript, started: float) -> None:
        elapsed = time.perf_counter() - started
        event(log, "transcription.done", audio_sha256=audio.sha256[:16], audio_bytes=audio.size_bytes,
              container=audio.container, audio_s=round(audio.duration_s, 2), wall_s=round(elapsed, 3),
              x_realtime=round(audio.duration_s / elapsed, 1) if elapsed else None,
              segments=len(transcript.segments), chars=len(transcript.text), model=transcript.model)


def _draining() -> Overloaded:
    return Overloaded("this replica is shutting down and had not started on this audio; send it again (another "
                      "replica will take it)", retry_after_s=1, reason="draining")
