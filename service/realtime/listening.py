"""Audio in, for a live stream: PCM16 frames to the engine's 16 kHz float samples, and where speech starts and
stops (server VAD turn detection).

Speech is detected with the Silero VAD model faster-whisper ships (the one its batch ``vad_filter`` uses), run on
each 32 ms window as it arrives with its recurrent state carried over, so a turn's start and end are known within
one window of the audio instead of after re-scanning the whole buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from faster_whisper.vad import get_vad_model

from service.audio import SAMPLE_RATE

_WINDOW = 512  # Silero's window at 16 kHz
_CONTEXT = 64  # samples of the previous window it sees


class PcmInput:
    """Little-endian mono PCM16 at ``rate`` to float32 at 16 kHz. The resampler keeps its state between frames, so
    frame edges leave no clicks (resampling each frame alone would)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._odd = b""
        self._resampler = (av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                           if rate != SAMPLE_RATE else None)

    def feed(self, data: bytes) -> np.ndarray:
        data = self._odd + data
        cut = len(data) - len(data) % 2
        data, self._odd = data[:cut], data[cut:]
        pcm = np.frombuffer(data, dtype="<i2")
        if self._resampler is None:
            return pcm.astype(np.float32) / 32768.0
        if not len(pcm):
            return np.zeros(0, np.float32)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


class SpeechDetector:
    """Silero speech probability per 32 ms window, streaming."""

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """``windows``: shape (n, 512). One probability per window."""
        if not len(windows):
            return np.zeros(0, np.float32)
        contexts = np.vstack([self._context, windows[:-1, -_CONTEXT:]])
        batch = np.concatenate([contexts, windows], axis=1).astype(np.float32)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -_CONTEXT:].copy()
        return np.asarray(out).reshape(-1)


@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: int


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray


@dataclass(frozen=True)
class SpeechStopped:
    at_ms: int


Heard = SpeechStarted | Speech | SpeechStopped


class Turns:
    """Splits the stream into utterances. With server VAD: SpeechStarted, its Speech (with ``prefix_padding_ms``
    of audio before the start), SpeechStopped after ``silence_duration_ms`` of silence; silence between turns is
    dropped. Without (the client commits): every sample is Speech."""

    def __init__(self, vad: ServerVad | None) -> None:
        self.vad = vad
        self.samples_in = 0  # every sample received, the stream's clock
        self._pending = np.zeros(0, np.float32)
        self._detector = SpeechDetector() if vad else None
        self._preroll: list[np.ndarray] = []
        self._speaking = False
        self._silence = 0
        self._heard_to = 0  # samples: the end of the last window that sounded like speech

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def heard_until_s(self) -> float | None:
        """Where speech was last heard (None without turn detection: the client decides what is speech)."""
        return None if self.vad is None else self._heard_to / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[Heard]:
        if self.vad is None:
            self.samples_in += len(samples)
            return [Speech(samples)] if len(samples) else []
        pending = np.concatenate([self._pending, samples])
        whole = len(pending) - len(pending) % _WINDOW
        windows, self._pending = pending[:whole].reshape(-1, _WINDOW), pending[whole:]
        heard: list[Heard] = []
        assert self._detector is not None
        for window, p in zip(windows, self._detector.probabilities(windows)):
            start = self.samples_in
            self.samples_in += _WINDOW
            heard += self._window(window, float(p), start)
        return _coalesced(heard)

    def _window(self, window: np.ndarray, p: float, start: int) -> list[Heard]:
        vad = self.vad
        assert vad is not None
        if p >= max(vad.threshold - 0.15, 0.01):
            self._heard_to = start + _WINDOW
        if not self._speaking:
            self._preroll.append(window)
            keep = max(1, -(-vad.prefix_padding_ms * SAMPLE_RATE // 1000 // _WINDOW) + 1)
            del self._preroll[:-keep]
            if p < vad.threshold:
                return []
            self._speaking, self._silence = True, 0
            audio = np.concatenate(self._preroll)
            self._preroll = []
            begin = start + _WINDOW - len(audio)
            return [SpeechStarted(_ms(max(begin, 0))), Speech(audio)]
        neg = max(vad.threshold - 0.15, 0.01)  # hysteresis, as Silero's own segmenter
        self._silence = self._silence + _WINDOW if p < neg else 0
        if self._silence * 1000 >= vad.silence_duration_ms * SAMPLE_RATE:
            self._speaking = False
            return [Speech(window), SpeechStopped(_ms(start + _WINDOW - self._silence))]
        return [Speech(window)]


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _coalesced(heard: list[Heard]) -> list[Heard]:
    out: list[Heard] = []
    for item in heard:
        if isinstance(item, Speech) and out and isinstance(out[-1], Speech):
            out[-1] = Speech(np.concatenate([out[-1].samples, item.samples]))
        else:
            out.append(item)
    return out
