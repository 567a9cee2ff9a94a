"""Audio stage: bytes in memory -> 16 kHz mono float32 samples, or a precise error.

The format comes from probing the bytes with PyAV (FFmpeg), never from a file name or a client's MIME type.
Nothing is written to disk: PyAV reads from a BytesIO. Limits are checked before decoding (size, the duration
the container declares) and again while decoding, because a header may lie.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import av
import numpy as np

from service.config import AudioLimits
from service.errors import ScribeError

SAMPLE_RATE = 16_000

# PyAV container names we accept (what clinicians' recorders and browsers' MediaRecorder produce).
_CONTAINERS = {
    "wav": "wav",
    "mp3": "mp3",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "aac": "aac",
    "flac": "flac",
    "ogg": "ogg",
    "matroska,webm": "webm",
}
_CODECS = {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_u8", "pcm_mulaw", "pcm_alaw",
           "mp3", "mp3float", "aac", "flac", "opus", "vorbis", "alac"}
ACCEPTED = "wav, mp3, m4a/aac, flac, ogg (opus/vorbis) or webm (opus)"

# Leading bytes of the containers above: lets us say "corrupt or truncated X" instead of "not audio" when a
# recording we would accept cannot even be opened (e.g. an m4a cut before its index).
_SIGNATURES = ((b"RIFF", "wav"), (b"ID3", "mp3"), (b"fLaC", "flac"), (b"OggS", "ogg"),
               (b"\x1a\x45\xdf\xa3", "webm"), (b"\xff\xf1", "aac"), (b"\xff\xf9", "aac"), (b"\xff\xfb", "mp3"),
               (b"\xff\xf3", "mp3"), (b"\xff\xf2", "mp3"))
# A recording shorter than its header says by more than this is truncated (encoders pad by a few frames).
_TRUNCATION_SLACK_S = 1.0
_TRUNCATION_SLACK_RATIO = 0.05


class AudioTooLarge(ScribeError):
    status, slug, title = 413, "audio-too-large", "Audio too large"


class UnsupportedAudio(ScribeError):
    status, slug, title = 415, "unsupported-audio", "Unsupported audio"


class InvalidAudio(ScribeError):
    status, slug, title = 422, "invalid-audio", "Invalid audio"


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    container: str
    codec: str
    sha256: str  # of the uploaded bytes: a stable id for logs and idempotency, not the audio itself
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(data: bytes, limits: AudioLimits) -> Audio:
    if not data:
        raise InvalidAudio("the upload is empty (0 bytes)")
    if len(data) > limits.max_upload_bytes:
        raise AudioTooLarge(f"the upload is {_mib(len(data))}; the limit is {_mib(limits.max_upload_bytes)}")

    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        sniffed = _sniff(data)
        if sniffed:
            raise InvalidAudio(f"the data looks like {sniffed} but cannot be opened: corrupt or truncated") from None
        raise UnsupportedAudio(f"the data is not a recognised audio format; send {ACCEPTED}") from None

    with container:
        fmt = _CONTAINERS.get(container.format.name)
        if fmt is None:
            raise UnsupportedAudio(f"'{container.format.name}' data is not a supported audio format; send {ACCEPTED}")
        if not container.streams.audio:
            raise UnsupportedAudio(f"the {fmt} file contains no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        if codec not in _CODECS:
            raise UnsupportedAudio(f"the {fmt} file's audio codec '{codec}' is not supported; send {ACCEPTED}")

        declared_s = _riff_declared_duration(data) if fmt == "wav" else _declared_duration(container, stream)
        if declared_s is not None and declared_s > limits.max_duration_s:
            raise InvalidAudio(
                f"the {fmt} header declares {_span(declared_s)}; the limit is {_span(limits.max_duration_s)}")

        samples = _decode_stream(container, stream, fmt, limits)

    duration_s = len(samples) / SAMPLE_RATE
    if duration_s == 0:
        raise InvalidAudio(f"the {fmt} file contains no decodable audio")
    if declared_s is not None and duration_s < declared_s - max(_TRUNCATION_SLACK_S,
                                                                 _TRUNCATION_SLACK_RATIO * declared_s):
        raise InvalidAudio(
            f"the {fmt} file is truncated: its header declares {declared_s:.1f} s, only {duration_s:.1f} s decode")
    if duration_s < limits.min_duration_s:
        raise InvalidAudio(f"the audio lasts {duration_s:.2f} s; the minimum is {limits.min_duration_s:g} s")
    return Audio(samples=samples, container=fmt, codec=codec, sha256=hashlib.sha256(data).hexdigest(),
                 size_bytes=len(data))


def _decode_stream(container: av.container.InputContainer, stream: av.AudioStream, fmt: str,
                   limits: AudioLimits) -> np.ndarray:
    max_samples = int(limits.max_duration_s * SAMPLE_RATE)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for frame in frames:
            chunk = frame.to_ndarray().reshape(-1)
            chunks.append(chunk)
            total += len(chunk)
        if total > max_samples:
            raise InvalidAudio(f"the audio runs past the {_span(limits.max_duration_s)} limit while decoding")

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                take(resampler.resample(frame))
        take(resampler.resample(None))
    except av.error.FFmpegError:
        raise InvalidAudio(
            f"the {fmt} audio is corrupt or truncated: decoding failed after {total / SAMPLE_RATE:.1f} s") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _riff_declared_duration(data: bytes) -> float | None:
    """What a WAV header claims; FFmpeg clamps it to the bytes present, which would hide a cut-off upload."""
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk_id == b"fmt " and pos + 20 <= len(data):
            byte_rate = int.from_bytes(data[pos + 16:pos + 20], "little")
        elif chunk_id == b"data":
            streaming = size in (0, 0xFFFFFFFF)  # writers that did not know the length yet
            return None if streaming or not byte_rate else size / byte_rate
        pos += 8 + size + (size & 1)
    return None


def _sniff(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "mp4"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _span(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"
