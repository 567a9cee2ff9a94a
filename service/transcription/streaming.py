"""Transcribing an utterance while it is spoken: re-decode the growing audio, hand on only words that are stable.

Whisper decodes a whole window at once, so a live transcript is built by decoding the utterance again as audio
arrives. The last words of each hypothesis change from one decode to the next; showing them as final would make
text jump under the clinician's eyes. LocalAgreement-2 (the policy of ufal's whisper_streaming) confirms the
prefix that two consecutive hypotheses agree on: confirmed words never change, the rest is shown as tentative.

Measured on our fixtures while prototyping (a LocalAgreement loop on tiny.en outside the service; the service's
figures are in docs/benchmarks.md): the prompt may only carry confirmed text that has left the window (prompting
with text still in the window made tiny.en repeat itself, 24 % WER); a word whose spelling flips
between decodes ("400 mg" / "400 milligrams") would hold every word after it, so a word that has stayed in the
hypothesis for STALL_S of audio is confirmed anyway; the window is cut at a confirmed word once it grows past
``window_s`` so each decode stays short.

Plain Python: the session (service/realtime) owns the order of calls; ``decode`` runs on a pool worker, the rest
on the event loop, so the audio a decode reads is a snapshot and nothing here is shared between threads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from service.audio import SAMPLE_RATE, Audio
from service.transcription.engine import Transcriber
from service.transcription.transcript import TranscribeOptions, Transcript

STALL_S = 1.0  # a word this far behind the decoded audio's end is confirmed even if its spelling keeps flipping
# Utterances up to this long are decoded once more, whole, with the caller's options (beam search, temperature
# fallback), for their final text: as good as batch. Longer ones end with the confirmed words + the tail. The
# audio is kept in memory for it (60 s = 3.8 MB); the final decode of a long utterance delays the next one's
# first words by its time (~2 s for 60 s of tiny.en on one core).
WHOLE_UTTERANCE_S = 60.0
_PROMPT_CHARS = 200


@dataclass(frozen=True)
class TimedWord:
    text: str  # as Whisper wrote it, with its leading space
    start: float  # seconds since the stream began
    end: float
    probability: float


def _key(text: str) -> str:
    """What two hypotheses must agree on: the word without case or punctuation."""
    return re.sub(r"[^\w%]+", "", text.lower())


class LocalAgreement:
    def __init__(self) -> None:
        self.confirmed_end = 0.0
        self._previous: list[TimedWord] = []  # the last hypothesis's unconfirmed words
        self._recent: list[str] = []  # keys of the last confirmed words, to drop a hypothesis's repeat of them

    @property
    def tentative(self) -> list[TimedWord]:
        return list(self._previous)

    def update(self, hypothesis: list[TimedWord], decoded_to: float,
               heard_until: float | None = None) -> list[TimedWord]:
        """The words confirmed by this hypothesis (of the audio up to ``decoded_to``), in order. A word starting
        after ``heard_until`` (where speech was last heard) stays tentative: two decodes can agree on a phrase
        Whisper invents on silence ("Thank you."), and a pause may yet end in speech that decides it."""
        new = self._unconfirmed(hypothesis)
        if heard_until is not None:
            new = [w for w in new if w.start < heard_until]
        agreed: list[TimedWord] = []
        for word, before in zip(new, self._previous):
            if _key(word.text) != _key(before.text):
                break
            agreed.append(word)
        rest = new[len(agreed):]
        while rest and rest[0].end <= decoded_to - STALL_S:  # stable in time, unstable in spelling: take it
            agreed.append(rest.pop(0))
        self._previous = rest
        self._confirm(agreed)
        return agreed

    def flush(self, hypothesis: list[TimedWord]) -> list[TimedWord]:
        """The utterance ended: every word of the last hypothesis not yet confirmed."""
        rest = self._unconfirmed(hypothesis)
        self._previous = []
        self._confirm(rest)
        return rest

    def _unconfirmed(self, hypothesis: list[TimedWord]) -> list[TimedWord]:
        new = [w for w in hypothesis if w.start > self.confirmed_end - 0.1 and _key(w.text)]
        # A hypothesis often starts by repeating the last confirmed words (their times overlap): drop them.
        if new and self._recent and abs(new[0].start - self.confirmed_end) < 1.0:
            for n in range(min(5, len(new), len(self._recent)), 0, -1):
                if [_key(w.text) for w in new[:n]] == self._recent[-n:]:
                    return new[n:]
        return new

    def _confirm(self, words: list[TimedWord]) -> None:
        if words:
            self.confirmed_end = words[-1].end
            self._recent = (self._recent + [_key(w.text) for w in words])[-5:]


class LiveUtterance:
    """One utterance: its audio (the decode window, and the whole of it while short enough for a final decode),
    its confirmed words and the context carried into the prompt."""

    def __init__(self, options: TranscribeOptions, *, start_s: float, window_s: float, context: str = "") -> None:
        # Live decodes are greedy and single-pass: speed matters more than the last point of accuracy, which the
        # final decode of the whole utterance (the caller's options) restores.
        self.final_options = options
        self.live_options = options.model_copy(update={"beam_size": 1, "temperature": 0.0,
                                                        "word_timestamps": True})
        self.start_s = start_s
        self.window_s = window_s
        self.context = context  # text of earlier utterances, for the prompt
        self.confirmed: list[TimedWord] = []
        self.agreement = LocalAgreement()
        self._window: list[np.ndarray] = []
        self._window_start_s = start_s
        self._whole: list[np.ndarray] | None = []
        self.samples = 0  # all of the utterance's samples so far
        self._snapshot_at = 0  # ``samples`` when the last live decode took its snapshot
        # Where the turn detector heard speech end: words the final decode puts after it are Whisper's
        # well-known inventions on silence ("Thank you for watching."), not the clinician's.
        self.speech_end_s: float | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.samples / SAMPLE_RATE

    @property
    def pending_s(self) -> float:
        """Audio not yet seen by a live decode."""
        return (self.samples - self._snapshot_at) / SAMPLE_RATE

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.confirmed).strip()

    def append(self, samples: np.ndarray) -> None:
        self._window.append(samples)
        self.samples += len(samples)
        if self._whole is not None:
            self._whole.append(samples)
            if self.samples / SAMPLE_RATE > WHOLE_UTTERANCE_S:
                self._whole = None  # too long to decode whole: the final text is the confirmed words + the tail

    def snapshot(self) -> Window:
        """The audio a live decode reads, copied: appends go on while a worker decodes it."""
        samples = np.concatenate(self._window) if self._window else np.zeros(0, np.float32)
        self._window = [samples]
        self._snapshot_at = self.samples
        # Speech runs at 3-5 tokens a second; twice that and more is a loop, not dictation.
        cap = min(200, int(8 * len(samples) / SAMPLE_RATE) + 16)
        return Window(samples, self._window_start_s, self.live_options.model_copy(
            update={"initial_prompt": self._prompt(), "max_new_tokens": cap}))

    def accept(self, window: Window, transcript: Transcript, heard_until: float | None = None) -> list[TimedWord]:
        """A live decode's result: the newly confirmed words; cuts the window when it has grown long."""
        if _looping(transcript):
            return []  # a greedy decode stuck repeating itself is no evidence for or against any word
        new = self.agreement.update(window.words(transcript), window.start_s + window.duration_s, heard_until)
        self.confirmed += new
        if window.duration_s > self.window_s and new:
            self._cut(new[-1].end)
        return new

    def final_window(self) -> Window:
        """What the final decode reads: the whole utterance when short enough (its text may then correct the
        live one), else the window, with the caller's full decoding options."""
        if self._whole is not None:
            samples = np.concatenate(self._whole) if self._whole else np.zeros(0, np.float32)
            return Window(samples, self.start_s, self.final_options.model_copy(
                update={"word_timestamps": True, "initial_prompt": self._join(self.final_options.initial_prompt,
                                                                               self.context[-_PROMPT_CHARS:])}),
                          whole=True)
        window = self.snapshot()
        return Window(window.samples, window.start_s, window.options.model_copy(
            update={"beam_size": self.final_options.beam_size, "temperature": self.final_options.temperature,
                    "max_new_tokens": None}))

    def finish(self, window: Window, transcript: Transcript) -> tuple[list[TimedWord], str]:
        """The final decode's result: (words not yet confirmed, to send as the last deltas; the final text)."""
        words = [w for w in window.words(transcript) if self.speech_end_s is None or w.start < self.speech_end_s]
        tail = self.agreement.flush(words)
        self.confirmed += tail
        return tail, ("".join(w.text for w in words).strip() if window.whole else self.text)

    def tentative(self) -> str:
        return "".join(w.text for w in self.agreement.tentative)

    def _cut(self, at_s: float) -> None:
        samples = np.concatenate(self._window)
        drop = int((at_s - self._window_start_s) * SAMPLE_RATE)
        if 0 < drop < len(samples):
            self._window = [samples[drop:]]
            self._window_start_s += drop / SAMPLE_RATE

    def _prompt(self) -> str | None:
        """The caller's prompt (the chart's vocabulary, when long) + confirmed text that has left the window."""
        left = "".join(w.text for w in self.confirmed if w.end <= self._window_start_s)
        return self._join(self.final_options.initial_prompt, (self.context + left)[-_PROMPT_CHARS:])

    @staticmethod
    def _join(*parts: str | None) -> str | None:
        return " ".join(p.strip() for p in parts if p and p.strip()) or None


def _looping(transcript: Transcript) -> bool:
    """Whisper's own test for a repetition loop (its fallback threshold), which a single greedy pass can fall into."""
    return any(s.compression_ratio > 2.4 for s in transcript.segments)


@dataclass(frozen=True)
class Window:
    samples: np.ndarray
    start_s: float
    options: TranscribeOptions
    whole: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def decode(self, transcriber: Transcriber) -> Transcript:
        """On a pool worker."""
        audio = Audio(samples=self.samples, container="pcm", codec="pcm_s16le", sha256="", size_bytes=0)
        return transcriber.transcribe(audio, self.options)

    def words(self, transcript: Transcript) -> list[TimedWord]:
        return [TimedWord(w.word, self.start_s + w.start, self.start_s + w.end, w.probability)
                for s in transcript.segments for w in (s.words or [])]
