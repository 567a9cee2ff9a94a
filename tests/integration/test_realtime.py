"""Live dictation over WebSocket (/v1/realtime), the service over a real socket with the real model, speech fed in
real time: the protocol in both session shapes, words confirmed while the speaker is still speaking, the final
text as good as batch, the OpenAI SDK's own realtime client, protocol errors that keep the stream, and the limits
that close it. Authorization and the chart's vocabulary: tests/integration/test_realtime_auth.py."""

import asyncio
import base64
import json
import time

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from tests.conftest import TEST_LIMITS, start_server, stop_server
from tests.support.realtime import pcm16, replay, ws_url
from tests.support.waiting import wait_for
from tests.support.wer import wer

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def speech(dictation):
    return pcm16(dictation.path, 24000)


def clip(pcm: bytes, seconds: float, rate: int = 24000) -> bytes:
    return pcm[: int(seconds * rate) * 2]


def test_words_are_confirmed_while_speaking_and_the_final_text_is_as_good_as_batch(server, dictation, speech):
    batch = httpx.post(server.url + "/v1/audio/transcriptions", files={"file": ("d.ogg", dictation.audio)},
                       timeout=120).json()["text"]
    audio_s = len(speech) / 2 / 24000
    result = asyncio.run(replay(ws_url(server.url), speech, session={
        "type": "transcription", "include": ["item.input_audio_transcription.tentative"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whisper-1", "language": "en"}}}}))
    kinds = [e["type"] for _, e in result.events]
    assert kinds[:2] == ["session.created", "session.updated"] and "input_audio_buffer.speech_started" in kinds
    deltas = result.timed(DELTA)
    # Words arrive while the speaker is speaking, steadily, not at the end of a piece.
    first = deltas[0][0]
    spoken = [t for t, _ in deltas if t < audio_s]
    print(f"\nfirst text at {first:.2f} s; {len(spoken)}/{len(deltas)} deltas before the audio ended; "
          f"streamed WER {wer(dictation.reference, result.streamed_text):.3f}, completed "
          f"{wer(dictation.reference, result.completed_text):.3f}, batch {wer(dictation.reference, batch):.3f}")
    # How soon is bench/streaming.py's figure (first_text_s, ~1.3 s idle); here, on a machine that may be busy, the
    # behaviour: text comes while the first quarter of the dictation is still being spoken.
    assert first < audio_s / 4
    assert len(spoken) >= 10 and len(spoken) >= 0.8 * len(deltas)
    assert result.of("conversation.item.input_audio_transcription.tentative")
    # Each item: committed, then completed; deltas are text only, never repeated.
    committed = [e["item_id"] for e in result.of("input_audio_buffer.committed")]
    assert committed == [e["item_id"] for e in result.of(COMPLETED)]
    assert {e["item_id"] for e in result.of(DELTA)} <= set(committed)
    # The final text is as good as batch; the live deltas are a draft of the same words (greedy decodes, never
    # revised: 4-13 points more WER than batch in bench/streaming.py), not a loop, not a dropped stretch.
    assert wer(dictation.reference, result.completed_text) <= wer(dictation.reference, batch) + 0.05
    assert wer(result.completed_text, result.streamed_text) <= 0.30
    assert "chest" not in server.log().lower()  # sizes and durations only: no words in the log


def test_the_flat_session_shape_and_client_commits_at_16khz(server, dictation):
    pcm = clip(pcm16(dictation.path, 16000), 8, 16000)
    flat = asyncio.run(replay(ws_url(server.url), pcm, rate=16000, shape="ga", commit=True, trailing_silence_s=0,
                              session={"type": "transcription", "audio": {"input": {
                                  "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}}))
    assert not flat.of("input_audio_buffer.speech_started")  # no turn detection: the client's commit ends the item
    (committed,) = flat.timed("input_audio_buffer.committed")
    assert [t for t, _ in flat.timed(DELTA) if t < committed[0]], "no deltas before the commit"
    assert "chest pain" in flat.completed_text.lower()

    beta = asyncio.run(replay(ws_url(server.url), clip(pcm16(dictation.path), 8), shape="beta", session={
        "input_audio_format": "pcm16", "input_audio_transcription": {"model": "gpt-4o-transcribe"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}))
    (reply,) = beta.of("transcription_session.updated")
    assert reply["session"]["input_audio_format"] == "pcm16" and reply["session"]["turn_detection"]["type"] == "server_vad"
    assert "chest pain" in beta.completed_text.lower()


def test_the_openai_sdk_realtime_client(server, dictation):
    pcm = clip(pcm16(dictation.path), 8) + bytes(24000 * 2)

    async def dictate() -> list:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="not-needed-without-auth")
        seen = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                    "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
            started = time.monotonic()
            step = 2400 * 2
            for k, i in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(0.0, started + k * 0.1 - time.monotonic()))
                await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step]).decode())
            async for event in connection:
                seen.append(event)
                if event.type == COMPLETED:
                    break
        return seen

    events = asyncio.run(asyncio.wait_for(dictate(), 60))
    kinds = [e.type for e in events]
    assert "session.created" in kinds and "session.updated" in kinds and DELTA in kinds
    completed = events[-1]
    assert completed.type == COMPLETED and "chest pain" in completed.transcript.lower()
    deltas = "".join(e.delta for e in events if e.type == DELTA)
    assert wer(completed.transcript, deltas) < 0.25


async def _events_until(ws, kind: str, timeout: float = 30) -> list[dict]:
    seen = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1]["type"] != kind:
            seen.append(json.loads(await ws.recv()))
    return seen


def test_protocol_errors_are_named_and_the_stream_goes_on(server):
    async def probe() -> dict[str, dict]:
        errors = {}
        async with websockets.connect(ws_url(server.url)) as ws:
            await _events_until(ws, "session.created")
            for name, message in [
                ("invalid_json", "{not json"),
                ("unsupported_event", json.dumps({"type": "response.create", "event_id": "evt_1"})),
                ("unsupported_audio_format", json.dumps({"type": "session.update", "session": {
                    "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}})),
                ("model_not_found", json.dumps({"type": "session.update", "session": {
                    "type": "transcription", "audio": {"input": {"transcription": {"model": "gpt-9-large"}}}}})),
                ("invalid_value", json.dumps({"type": "session.update", "session": {
                    "type": "transcription", "audio": {"input": {"transcription": {"language": "fr"}}}}})),
                ("input_audio_buffer_commit_empty", json.dumps({"type": "input_audio_buffer.commit"})),
                ("invalid_audio", json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"})),
            ]:
                await ws.send(message)
                errors[name] = (await _events_until(ws, "error"))[-1]["error"]
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            assert (await _events_until(ws, "input_audio_buffer.cleared"))
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
            assert (await _events_until(ws, "session.updated"))  # still open and serving
        return errors

    errors = asyncio.run(probe())
    for code, error in errors.items():
        assert error["code"] == code and error["message"], error
    assert errors["unsupported_event"]["event_id"] == "evt_1"
    assert "English-only" in errors["invalid_value"]["message"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("realtime-limits") / "server.log", **TEST_LIMITS,
                           SCRIBE_REALTIME__MAX_STREAMS="1", SCRIBE_REALTIME__IDLE_TIMEOUT_S="2",
                           SCRIBE_REALTIME__MAX_MESSAGE_BYTES="65536", SCRIBE_REALTIME__MAX_DURATION_S="3",
                           SCRIBE_REALTIME__BURST_S="1")
    yield running
    stop_server(running)


async def _speak(ws, pcm: bytes, chunks: int, at_chunk: dict | None = None) -> None:
    """``chunks`` 100 ms appends of 24 kHz PCM16 on a wall-clock schedule, until the server closes the stream."""
    started = time.monotonic()
    for k in range(chunks):
        (at_chunk or {}).get(k, lambda: None)()
        await asyncio.sleep(max(0.0, started + k * 0.1 - time.monotonic()))
        try:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                pcm[k * 4800:(k + 1) * 4800]).decode()}))
        except websockets.ConnectionClosed:
            return


async def _closed(ws, timeout: float = 60) -> tuple[list[dict], int]:
    seen = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                seen.append(json.loads(await ws.recv()))
        except websockets.ConnectionClosed:
            pass
    return seen, ws.close_code


def test_streams_beyond_capacity_are_refused_with_retry_after(limited):
    async def probe():
        async with websockets.connect(ws_url(limited.url)) as first:
            await _events_until(first, "session.created")
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_url(limited.url)):
                    pass
            metrics = httpx.get(limited.url + "/metrics").text
        return refused.value.response, metrics

    response, metrics = asyncio.run(probe())
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    problem = json.loads(response.body)
    assert problem["type"].endswith("overloaded") and "live streams" in problem["detail"]
    assert "fhir_scribe_realtime_streams 1.0" in metrics
    assert 'fhir_scribe_transcription_rejected_total{reason="realtime_streams"} 1.0' in metrics
    # The slot is given back when the stream ends (the server sees the close a moment after the client).
    wait_for(lambda: "fhir_scribe_realtime_streams 0.0" in httpx.get(limited.url + "/metrics").text,
             timeout=30, what="the stream's slot to be given back")


@pytest.mark.parametrize("case", ["idle", "huge message", "faster than real time", "too long"])
def test_a_stream_past_its_limits_is_told_and_closed(limited, dictation, case):
    pcm = pcm16(dictation.path)

    async def probe():
        async with websockets.connect(ws_url(limited.url), max_size=None) as ws:
            await _events_until(ws, "session.created")
            if case == "huge message":
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(bytes(70_000)).decode()}))
            elif case == "faster than real time":  # 0.5 s appends back to back
                for k in range(6):
                    try:
                        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                            pcm[k * 24000:(k + 1) * 24000]).decode()}))
                    except websockets.ConnectionClosed:
                        break
            elif case == "too long":  # 3 s allowed, sent in real time
                await _speak(ws, pcm, chunks=40)
            return await _closed(ws)

    started = time.monotonic()
    events, code = asyncio.run(probe())
    errors = [e["error"]["code"] for e in events if e["type"] == "error"]
    expected = {"idle": ("idle_timeout", 1000), "huge message": ("message_too_large", 1009),
                "faster than real time": ("rate_limit_exceeded", 1008),
                "too long": ("max_duration_exceeded", 1008)}[case]
    assert (errors[-1], code) == expected, events
    if case == "idle":  # closed by the 2 s idle timeout: not before it, and not by the 60 s default either
        assert 1.5 < time.monotonic() - started < 45
    assert httpx.get(limited.url + "/readyz").status_code == 200


def test_only_the_transcription_intent_is_served(server):
    async def probe():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url(server.url, "intent=conversation")):
                pass
        return refused.value.response

    response = asyncio.run(probe())
    assert response.status_code == 400 and "intent=transcription" in json.loads(response.body)["detail"]


def test_a_draining_replica_finishes_the_utterance_in_hand_then_closes_with_1012(tmp_path, dictation):
    import signal

    running = start_server(tmp_path / "server.log", **TEST_LIMITS)
    pcm = pcm16(dictation.path)
    try:
        async def probe():
            async with websockets.connect(ws_url(running.url)) as ws:
                await _events_until(ws, "session.created")
                # 8 s in real time; SIGTERM after 4 s
                await _speak(ws, pcm, chunks=80, at_chunk={40: lambda: running.process.send_signal(signal.SIGTERM)})
                return await _closed(ws, timeout=30)

        events, code = asyncio.run(probe())
    finally:
        stop_server(running)
    kinds = [e["type"] for e in events]
    assert code == 1012 and events[-1]["error"]["code"] == "server_restarting", events[-3:]
    assert COMPLETED in kinds and kinds.index(COMPLETED) < len(kinds) - 1  # the utterance first, then the close
    completed = next(e for e in events if e["type"] == COMPLETED)
    assert "chest pain" in completed["transcript"].lower()
