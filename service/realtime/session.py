"""One live transcription stream: client events in, transcription events out, words confirmed as they are spoken.

Two loops share the session. The reader (``run``) takes client events as they come: audio is resampled,
split into utterances by the turn detector and appended to the utterance being spoken. The decoder
(``_decode``) re-decodes the open utterance on a pool worker after every ``decode_interval_ms`` of new audio and
sends the words two decodes agree on as deltas; an utterance that ended (silence, or the client's commit) gets one
final decode and its ``completed`` event, in order. Nothing is kept once an utterance is completed but its text
as the next one's prompt context; nothing is logged but sizes and durations.

Bounds: a stream's audio may run ``burst_s`` ahead of the wall clock and ``max_duration_s`` in all; a decoder
falling ``lag_warning_s`` behind the audio tells the client, twice that far it closes the stream (1013) rather
than fall further behind.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from service.audio import SAMPLE_RATE
from service.config import RealtimeSettings
from service.errors import BadRequest
from service.logs import event
from service.realtime.listening import PcmInput, Speech, SpeechStarted, SpeechStopped, Turns
from service.realtime.protocol import (TENTATIVE, ProtocolError, SessionConfig, error_event, new_id, parse_event,
                                       server_event, session_object, updated)
from service.transcription.models import accepts_model
from service.transcription.pool import TranscriptionPool
from service.transcription.streaming import LiveUtterance, TimedWord, Window
from service.transcription.transcript import TranscribeOptions, Transcript

log = logging.getLogger(__name__)
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[str | bytes | None]]  # None: the client went away
_CONTEXT_CHARS = 200


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class RealtimeSession:
    def __init__(self, pool: TranscriptionPool, settings: RealtimeSettings, options: TranscribeOptions,
                 send: Send) -> None:
        self.pool = pool
        self.settings = settings
        self.base_options = options  # the engine's defaults with the chart's vocabulary
        self.id = new_id("sess")
        self.config = SessionConfig()
        self._send_event = send
        self._options = options
        self._input = PcmInput(self.config.rate)
        self._turns = Turns(self.config.turn_detection)
        self._current: tuple[str, LiveUtterance] | None = None
        self._ended: deque[tuple[str, LiveUtterance]] = deque()
        self._previous_item: str | None = None
        self._context = ""
        self._wake = asyncio.Event()
        self._first_audio_at: float | None = None
        self._audio_s = 0.0
        self._lag_told = False
        self.utterances = 0

    async def run(self, receive: Receive) -> Closed | None:
        """Serve the stream until the client leaves (None) or it must be closed (how)."""
        decoder = asyncio.create_task(self._decode())
        try:
            await self._send(server_event("session.created", session=self._session()))
            while True:
                message = asyncio.ensure_future(receive())
                done, _ = await asyncio.wait({message, decoder}, timeout=self.settings.idle_timeout_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if decoder in done:
                    message.cancel()
                    return await self._closing(decoder.exception())
                if not done:
                    message.cancel()
                    return await self._closing(ProtocolError(
                        "idle_timeout", f"no client event for {self.settings.idle_timeout_s:g} s; the stream is "
                        "closed (open a new one to go on)", close=1000))
                raw = message.result()
                if raw is None:
                    return None
                try:
                    await self._handle(raw)
                except ProtocolError as error:
                    if error.close is not None:
                        return await self._closing(error)
                    await self._send(error_event(error))
                if self.pool.draining:  # the utterance in hand is finished and sent, then the stream is closed
                    await self._commit(from_client=False)
                    await self._settled(decoder, timeout_s=10)
                    return await self._closing(ProtocolError(
                        "server_restarting", "this replica is restarting; open a new stream (another replica will "
                        "take it)", kind="server_error", close=1012))
        finally:
            decoder.cancel()
            event(log, "realtime.stream_end", audio_s=round(self._audio_s, 1), utterances=self.utterances)

    async def _settled(self, decoder: asyncio.Task[None], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._ended and not decoder.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _closing(self, error: BaseException | None) -> Closed:
        if not isinstance(error, ProtocolError) or error.close is None:
            raise error or RuntimeError("the decoder stopped")
        await self._send(error_event(error))
        return Closed(error.close, error.code)

    async def _handle(self, raw: str | bytes) -> None:
        if len(raw) > self.settings.max_message_bytes:
            raise ProtocolError("message_too_large", f"a client event is at most {self.settings.max_message_bytes} "
                                "bytes; send audio in smaller appends (e.g. 100 ms each)", close=1009)
        incoming = parse_event(raw)
        kind = incoming["type"]
        try:
            if kind in ("session.update", "transcription_session.update"):
                await self._update(incoming)
            elif kind == "input_audio_buffer.append":
                await self._append(incoming)
            elif kind == "input_audio_buffer.commit":
                await self._commit(from_client=True)
            elif kind == "input_audio_buffer.clear":
                self._current = None
                await self._send(server_event("input_audio_buffer.cleared"))
            else:
                raise ProtocolError("unsupported_event", f"'{kind}' is not served here: a transcription session "
                                    "takes session.update, input_audio_buffer.append, .commit and .clear",
                                    param="type")
        except ProtocolError as error:
            if error.close is not None:
                raise
            await self._send(error_event(error, incoming.get("event_id")))

    async def _update(self, incoming: dict[str, Any]) -> None:
        config = updated(self.config, incoming)
        if self._audio_s and (config.rate, config.turn_detection) != (self.config.rate, self.config.turn_detection):
            raise ProtocolError("session_in_progress", "the audio format and turn detection are set before the "
                                "first audio; open a new stream to change them", param="session")
        served = self.pool.transcriber.source.name
        if not accepts_model(config.model, served):
            raise ProtocolError("model_not_found", f"model '{config.model}' is not served here; this service runs "
                                f"'{served}'", param="session.audio.input.transcription.model")
        options = self.base_options.model_copy(update={
            "language": config.language or self.base_options.language,
            "initial_prompt": " ".join(p for p in (self.base_options.initial_prompt, config.prompt) if p) or None})
        try:
            self.pool.transcriber.check_options(options)
        except BadRequest as exc:
            raise ProtocolError("invalid_value", exc.detail, param="session.audio.input.transcription.language") \
                from None
        self.config, self._options = config, options
        if not self._audio_s:
            self._input = PcmInput(config.rate)
            self._turns = Turns(config.turn_detection)
        reply = "session.updated" if incoming["type"] == "session.update" else "transcription_session.updated"
        await self._send(server_event(reply, session=self._session()))

    async def _append(self, incoming: dict[str, Any]) -> None:
        audio = incoming.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("invalid_value", "'audio' must be base64 PCM16", param="audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_audio", "'audio' is not valid base64", param="audio") from None
        now = time.monotonic()
        if self._first_audio_at is None:
            self._first_audio_at = now
        self._audio_s += len(data) / 2 / self.config.rate
        if self._audio_s > self.settings.max_duration_s:
            raise ProtocolError("max_duration_exceeded", f"a stream carries at most {self.settings.max_duration_s:g} "
                                "s of audio; open a new stream to go on", close=1008)
        if self._audio_s > now - self._first_audio_at + self.settings.burst_s:
            raise ProtocolError("rate_limit_exceeded", f"audio is arriving faster than real time (more than "
                                f"{self.settings.burst_s:g} s ahead of the clock); stream it as it is recorded, or "
                                "send a recording to POST /v1/audio/transcriptions", close=1008)
        for heard in self._turns.feed(self._input.feed(data)):
            if isinstance(heard, SpeechStarted):
                item_id = self._open(heard.at_ms / 1000)
                await self._send(server_event("input_audio_buffer.speech_started", audio_start_ms=heard.at_ms,
                                              item_id=item_id))
            elif isinstance(heard, Speech):
                if self._current is None:  # no turn detection: audio opens an item
                    self._open(self._turns.samples_in / SAMPLE_RATE - len(heard.samples) / SAMPLE_RATE)
                assert self._current is not None
                self._current[1].append(heard.samples)
            elif isinstance(heard, SpeechStopped):
                if self._current is not None:
                    self._current[1].speech_end_s = heard.at_ms / 1000
                    await self._send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=heard.at_ms,
                                                  item_id=self._current[0]))
                await self._commit(from_client=False)
        self._wake.set()

    def _open(self, start_s: float) -> str:
        item_id = new_id("item")
        self._current = (item_id, LiveUtterance(self._options, start_s=start_s, window_s=self.settings.window_s,
                                                context=self._context))
        return item_id

    async def _commit(self, from_client: bool) -> None:
        if self._current is None or not self._current[1].samples:
            if from_client:
                raise ProtocolError("input_audio_buffer_commit_empty", "there is no audio to commit")
            return
        item_id, utterance = self._current
        self._current = None
        await self._send(server_event("input_audio_buffer.committed", previous_item_id=self._previous_item,
                                      item_id=item_id))
        self._previous_item = item_id
        self._ended.append((item_id, utterance))
        self._wake.set()

    async def _decode(self) -> None:
        """Live decodes of the open utterance, then each ended utterance's final decode, results in order. A new
        live decode starts after ``decode_interval_ms`` of new audio, while another is still running if a worker is
        idle: the encoder's fixed cost (~0.35 s for tiny.en on one core) is most of a decode, so two overlapping
        decodes give a hypothesis twice as often, and LocalAgreement confirms a word one cycle sooner."""
        interval_s = self.settings.decode_interval_ms / 1000
        running: deque[tuple[str, LiveUtterance, Window, asyncio.Future[Transcript]]] = deque()
        while True:
            if running and running[0][3].done():
                item_id, utterance, window, job = running.popleft()
                await self._live_result(item_id, utterance, window, job.result())
                continue
            if self._ended and not running:
                await self._final(*self._ended[0])
                self._ended.popleft()
                continue
            current = self._current
            if (current is not None and not self._ended and current[1].pending_s >= interval_s
                    and (not running or (len(running) < 2 and self.pool.idle_workers > 0))):
                window = current[1].snapshot()
                running.append((*current, window, asyncio.ensure_future(self.pool.call(window.decode))))
                continue
            self._wake.clear()
            waits = [asyncio.ensure_future(self._wake.wait())]
            if running:
                waits.append(running[0][3])  # type: ignore[arg-type]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the stream ends while waiting: no pending task left behind
                waits[0].cancel()

    async def _live_result(self, item_id: str, utterance: LiveUtterance, window: Window,
                           transcript: Transcript) -> None:
        new = utterance.accept(window, transcript, self._turns.heard_until_s)
        await self._deltas(item_id, utterance, new)
        if TENTATIVE in self.config.include and self._current is not None and self._current[1] is utterance:
            await self._send(server_event("conversation.item.input_audio_transcription.tentative",
                                          item_id=item_id, content_index=0, text=utterance.tentative()))
        await self._check_lag(window.start_s + window.duration_s)

    async def _final(self, item_id: str, utterance: LiveUtterance) -> None:
        window = utterance.final_window()
        transcript = await self.pool.call(window.decode)
        tail, text = utterance.finish(window, transcript)
        await self._deltas(item_id, utterance, tail)
        await self._send(server_event("conversation.item.input_audio_transcription.completed",
                                      item_id=item_id, content_index=0, transcript=text))
        self._context = (self._context + " " + text)[-_CONTEXT_CHARS:]
        self.utterances += 1

    async def _deltas(self, item_id: str, utterance: LiveUtterance, words: list[TimedWord]) -> None:
        if not words:
            return
        text = "".join(w.text for w in words)
        if len(utterance.confirmed) == len(words):  # the item's first words
            text = text.lstrip()
        await self._send(server_event("conversation.item.input_audio_transcription.delta", item_id=item_id,
                                      content_index=0, delta=text))

    async def _check_lag(self, decoded_to_s: float) -> None:
        behind = self._turns.samples_in / SAMPLE_RATE - decoded_to_s
        limit = self.settings.lag_warning_s
        if behind > 2 * limit:
            raise ProtocolError("transcription_lagging", f"transcription fell {behind:.0f} s behind the audio; the "
                                "stream is closed rather than fall further behind (the service is busy: try again "
                                "later or send the recording to POST /v1/audio/transcriptions)",
                                kind="server_error", close=1013)
        if behind > limit and not self._lag_told:
            self._lag_told = True
            event(log, "realtime.lagging", level=logging.WARNING, behind_s=round(behind, 1))
            await self._send(error_event(ProtocolError(
                "transcription_lagging", f"transcription is {behind:.0f} s behind the audio: the service is busy",
                kind="server_error")))

    def _session(self) -> dict[str, Any]:
        return session_object(self.config, self.id, self.pool.transcriber.source.name)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_event(message)
