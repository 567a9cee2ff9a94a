"""A live-dictation client for tests and bench/streaming.py: plays audio into /v1/realtime in real time (100 ms
PCM16 appends on a wall-clock schedule, as a microphone would) and records every server event with the time it
arrived, measured from the first audio sent (the audio's own time line).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from faster_whisper import decode_audio

CHUNK_S = 0.1


def pcm16(path_or_bytes: Any, rate: int = 24000) -> bytes:
    import io

    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    samples = decode_audio(source, sampling_rate=rate)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@dataclass
class Replay:
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (seconds since audio start, event)
    close_code: int | None = None
    close_reason: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    def timed(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events if e["type"] == kind]

    @property
    def streamed_text(self) -> str:
        """The deltas joined per item, items in order."""
        items: dict[str, str] = {}
        for e in self.of("conversation.item.input_audio_transcription.delta"):
            items[e["item_id"]] = items.get(e["item_id"], "") + e["delta"]
        return " ".join(t.strip() for t in items.values() if t.strip())

    @property
    def completed_text(self) -> str:
        return " ".join(e["transcript"].strip() for e in self.of("conversation.item.input_audio_transcription.completed")
                        if e["transcript"].strip())


def ws_url(http_url: str, query: str = "intent=transcription") -> str:
    return http_url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime?" + query


async def replay(url: str, pcm: bytes, *, rate: int = 24000, session: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, speed: float = 1.0, trailing_silence_s: float = 1.0,
                 commit: bool = False, settle_s: float = 30.0, shape: str = "ga") -> Replay:
    """Stream ``pcm`` (PCM16 mono at ``rate``) then ``trailing_silence_s`` of silence, optionally commit, and
    wait until every committed item is completed (or ``settle_s``)."""
    result = Replay()
    audio = pcm + bytes(int(trailing_silence_s * rate) * 2)
    step = int(CHUNK_S * rate) * 2
    async with websockets.connect(url, additional_headers=headers or {}, max_size=None) as ws:
        t0 = time.monotonic()

        async def receive() -> None:
            try:
                async for message in ws:
                    result.events.append((time.monotonic() - t0, json.loads(message)))
            except websockets.ConnectionClosed:
                pass

        reader = asyncio.create_task(receive())
        if session is not None:
            kind = "session.update" if shape == "ga" else "transcription_session.update"
            await ws.send(json.dumps({"type": kind, "session": session}))
        t0 = time.monotonic()
        try:
            for k, i in enumerate(range(0, len(audio), step)):
                delay = t0 + k * CHUNK_S / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(audio[i:i + step]).decode()}))
            if commit:
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline and not reader.done():
                committed = {e["item_id"] for e in result.of("input_audio_buffer.committed")}
                completed = {e["item_id"] for e in result.of("conversation.item.input_audio_transcription.completed")}
                if committed and committed <= completed:
                    break
                await asyncio.sleep(0.05)
        except websockets.ConnectionClosed:
            pass
        finally:
            await ws.close()
            await asyncio.wait_for(reader, 10)
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result
