"""Fitting a vocabulary to the engine. Measured on tiny.en with the drug-heavy fixtures: hotwords of up to ~20
terms raised drug-name recall from 5/21 to 16-18/21 and cut WER; a long list is better as initial_prompt (a
76-word hotwords list broke the base model), though a prompt can make Whisper drop words, so it is for long
lists only, and never both."""

from __future__ import annotations

from service.config import VocabularySettings
from service.transcription.transcript import TranscribeOptions
from service.vocabulary.models import Term


def fitted(terms: list[Term], settings: VocabularySettings) -> tuple[str | None, list[Term]]:
    """(engine option, the terms it carries): hotwords for a short list, initial_prompt for a long one."""
    if not terms:
        return None, []
    if len(terms) <= settings.hotwords_max_terms:
        return "hotwords", terms
    if settings.prompt_max_terms:
        return "initial_prompt", terms[:settings.prompt_max_terms]
    return ("hotwords", terms[:settings.hotwords_max_terms]) if settings.hotwords_max_terms else (None, [])


def biased(options: TranscribeOptions, engine: str | None, terms: list[Term]) -> TranscribeOptions:
    """The options with the terms added after whatever the settings already give the engine."""
    if engine == "hotwords":
        words = " ".join(t.name for t in terms)
        return options.model_copy(update={"hotwords": " ".join(filter(None, [options.hotwords, words]))})
    if engine == "initial_prompt":
        listed = "Medications and problems: " + ", ".join(t.name for t in terms) + "."
        return options.model_copy(update={"initial_prompt": " ".join(filter(None, [options.initial_prompt, listed]))})
    return options
