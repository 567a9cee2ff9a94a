"""The faster-whisper engine, as plain synchronous Python (the CLI calls it directly; the API via the pool).

One ``WhisperModel`` per process, loaded once. faster-whisper releases the GIL while decoding, so several
threads can call ``transcribe`` at once; ``num_workers`` gives each of them its own CTranslate2 replica.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.tokenizer import _LANGUAGE_CODES

from service.audio import SAMPLE_RATE, Audio
from service.config import TranscriptionSettings
from service.errors import BadRequest
from service.logs import event
from service.transcription.models import ModelSource, resolve_model
from service.transcription.transcript import Segment, TranscribeOptions, Transcript, Word

log = logging.getLogger(__name__)
_PUNCTUATION = re.compile(r"[^\w'-]")

# Whisper's own fallback schedule: retry a window at a higher temperature when it looks like a repetition loop.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class Cancelled(Exception):
    """The consumer went away (e.g. a streaming client disconnected); stop decoding to free the worker."""

    def __init__(self, decoded_s: float) -> None:
        super().__init__(f"stopped after {decoded_s:.1f} s of audio")
        self.decoded_s = decoded_s


class Transcriber:
    def __init__(self, source: ModelSource, settings: TranscriptionSettings) -> None:
        self.source = source
        self.settings = settings
        self.device, self.compute_type = _device_and_compute(settings)
        self.model = WhisperModel(
            str(source.path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.num_workers,
            local_files_only=True,
        )
        self._batched = BatchedInferencePipeline(self.model) if settings.batched_from_s else None

    @property
    def multilingual(self) -> bool:
        return self.model.model.is_multilingual

    def default_options(self) -> TranscribeOptions:
        s = self.settings
        return TranscribeOptions(language=s.language, beam_size=s.beam_size, initial_prompt=s.initial_prompt,
                                 hotwords=s.hotwords, word_timestamps=s.word_timestamps, vad_filter=s.vad_filter)

    def check_options(self, options: TranscribeOptions) -> None:
        """Reject what the loaded model cannot do, rather than silently doing something else."""
        language = options.language
        if language is None:
            return
        if language not in _LANGUAGE_CODES:
            raise BadRequest(f"language '{language}' is not an ISO 639-1 code Whisper knows")
        if not self.multilingual and language != "en":
            raise BadRequest(f"model '{self.source.name}' is English-only; language '{language}' is not available")

    def warm_up(self) -> None:
        """One short decode so the first real request does not pay for lazy initialisation."""
        noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        segments, _ = self.model.transcribe(noise, beam_size=1, vad_filter=False, language="en")
        for _ in segments:
            pass

    def _pieces(self, word: str) -> int:
        """How many of the model's subword tokens spell ``word`` (punctuation aside): one for a common word,
        several for a rare or made-up one. The review stage reads it with the word's probability."""
        bare = _PUNCTUATION.sub("", word)
        return len(self.model.hf_tokenizer.encode(" " + bare, add_special_tokens=False).ids) if bare else 1

    def transcribe(
        self,
        audio: Audio,
        options: TranscribeOptions,
        on_segment: Callable[[Segment], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcript:
        self.check_options(options)
        kwargs: dict[str, Any] = dict(
            language=options.language,
            beam_size=options.beam_size,
            temperature=FALLBACK_TEMPERATURES if options.temperature is None else options.temperature,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            word_timestamps=options.word_timestamps,
            vad_filter=options.vad_filter,
            max_new_tokens=options.max_new_tokens,
        )
        if self._batched is not None and audio.duration_s >= (self.settings.batched_from_s or 0):
            # The batched pipeline cuts audio at speech boundaries, so it needs VAD on.
            kwargs.update(vad_filter=True, batch_size=self.settings.batch_size)
            pieces, info = self._batched.transcribe(audio.samples, **kwargs)
        else:
            pieces, info = self.model.transcribe(audio.samples, **kwargs)

        segments: list[Segment] = []
        for piece in pieces:
            segment = _segment(len(segments), piece, self._pieces)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
            if should_stop is not None and should_stop():
                raise Cancelled(segment.end)
        return Transcript(
            text="".join(s.text for s in segments).strip(),
            language=info.language,
            language_probability=round(info.language_probability, 4),
            duration_s=round(audio.duration_s, 3),
            segments=segments,
            model=self.source.name,
            model_revision=self.source.revision,
        )


def _segment(index: int, piece: Any, pieces: Callable[[str], int]) -> Segment:
    words = None
    if piece.words is not None:
        words = [Word(word=w.word, start=round(w.start, 3), end=round(w.end, 3), probability=round(w.probability, 4),
                      pieces=pieces(w.word)) for w in piece.words]
    return Segment(
        id=index, seek=piece.seek, start=round(piece.start, 3), end=round(piece.end, 3), text=piece.text,
        tokens=list(piece.tokens), temperature=piece.temperature or 0.0, avg_logprob=piece.avg_logprob,
        compression_ratio=piece.compression_ratio, no_speech_prob=piece.no_speech_prob, words=words,
    )


def _device_and_compute(settings: TranscriptionSettings) -> tuple[str, str]:
    device = settings.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = settings.compute_type
    if compute == "auto":
        # The packaged weights are float16; CPUs need int8 (or float32) asked for explicitly.
        compute = "float16" if device == "cuda" else "int8"
    return device, compute


def load_transcriber(settings: TranscriptionSettings) -> Transcriber:
    """The configured model, resolved, loaded and warmed up: the first dictation should not pay for the load, and
    a bad model setting should stop start-up with its name, before a port is bound."""
    started = time.perf_counter()
    source = resolve_model(settings.model, settings.model_cache_dir)
    transcriber = Transcriber(source, settings)
    transcriber.warm_up()
    event(log, "model.ready", model=source.name, revision=source.revision, device=transcriber.device,
          compute_type=transcriber.compute_type, num_workers=settings.num_workers,
          load_s=round(time.perf_counter() - started, 2))
    return transcriber
