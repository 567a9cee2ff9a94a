"""Malformed and hostile inputs, generated at test time from the real speech fixture (nothing binary committed)."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path


def run_ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def make(tmp: Path, speech: Path, encoded: dict[str, bytes]) -> dict[str, bytes]:
    """name -> bytes; the expected outcome of each is in the test that uses them."""

    def synth(name: str, *args: str) -> bytes:
        run_ffmpeg(*args, str(tmp / name))
        return (tmp / name).read_bytes()

    def halve(data: bytes) -> bytes:
        return data[: len(data) // 2]

    long_wav = synth("long.wav", "-f", "lavfi", "-i", "sine=frequency=300:duration=150", "-ar", "16000")
    lying = bytearray(encoded["wav"])
    data_at = lying.find(b"data")
    lying[data_at + 4:data_at + 8] = (16000 * 2 * 3 * 3600).to_bytes(4, "little")  # claims 3 hours
    unknown_length = bytearray(long_wav)
    data_at = unknown_length.find(b"data")
    unknown_length[data_at + 4:data_at + 8] = b"\xff\xff\xff\xff"  # "length unknown", as streaming writers do

    return {
        "zero_bytes": b"",
        "random_bytes": random.Random(7).randbytes(256 * 1024),
        "text_renamed_wav": b"Patient note: this is not audio at all.\n" * 40,
        "json_document": b'{"resourceType": "Patient", "id": "example"}',
        "pdf_document": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" * 40,
        "png_image": synth("image.png", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-frames:v", "1"),
        "video_only_mp4": synth("video.mp4", "-f", "lavfi", "-i", "testsrc=duration=3:size=160x120:rate=10",
                                "-pix_fmt", "yuv420p"),
        "unsupported_codec_wav": synth("adpcm.wav", "-i", str(speech), "-c:a", "adpcm_ms"),
        "truncated_mp3": halve(encoded["mp3"]),
        "truncated_webm": halve(encoded["webm"]),
        "truncated_m4a": halve(encoded["m4a"]),
        "truncated_wav": halve(encoded["wav"]),
        "truncated_flac": halve(encoded["flac"]),
        "header_claims_hours_wav": bytes(lying),
        "too_long_by_header": long_wav,
        "too_long_while_decoding": bytes(unknown_length),
        "clip_0_1_s": synth("short.wav", "-i", str(speech), "-t", "0.1"),
        "twice_the_size_limit": b"RIFF" + bytes(16 * 1024 * 1024),
    }
