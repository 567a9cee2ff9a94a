"""Sections stage speed: pipeline build time and median time per ~600-word transcript, then long texts.

    python bench/sections.py [--runs 200] [--long-runs 3] [--no-long]

The transcript is the five speech fixtures' reference texts run together (Whisper-style punctuation), topped up
to 600 words, plus an all-lowercase unpunctuated copy: both are timed.

"long text": ``Sectioner.structure`` end to end on 10k, 50k and 200k characters (200k is ``sections.max_chars``)
of the fixtures repeated (punctuated; punctuation spoken as "period"/"comma"; unpunctuated), and on 200k-character
adversarial texts: no punctuation and no headings (one sentence), nothing but command words, a flood of ConText
modifiers and targets, headings that split a token ("plan.x"). Sectioning must stay linear: chars/s roughly
constant from 10k to 200k.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def transcript(words: int = 600) -> str:
    texts = [p.read_text().strip() for p in sorted((REPO / "tests/fixtures/speech").glob("*.txt"))]
    pool = " ".join(texts).split()
    return " ".join((pool * 2)[:words])


_HEADING = re.compile(r"(chief complaint|history of present illness|past medical history|medications|allergies|"
                      r"vital signs|assessment and plan|assessment|plan|review of systems|social history|"
                      r"physical exam|family history)\.\s*", re.IGNORECASE)


def repeated(unit: str, chars: int) -> str:
    return " ".join([unit] * (chars // (len(unit) + 1)))


def long_texts() -> list[tuple[str, str]]:
    text = " ".join(p.read_text().strip() for p in sorted((REPO / "tests/fixtures/speech").glob("*.txt")))
    spoken = re.sub(r"\.\s*", " period ", re.sub(r",\s*", " comma ", text))
    unpunctuated = re.sub(r"[^\w\s'-]", "", text).lower()
    cases = [(f"{name} {chars // 1000}k", repeated(unit, chars))
             for name, unit in (("punctuated", text), ("spoken commands", spoken), ("unpunctuated", unpunctuated))
             for chars in (10_000, 50_000, 200_000)]
    cases += [(f"{name} 200k", repeated(unit, 200_000)) for name, unit in (
        ("one sentence", re.sub(r"[^\w\s'-]", "", _HEADING.sub("", text)).lower()),  # no punctuation, no headings
        ("command words", "period new line period"),
        ("modifier flood", "no pain but"),
        ("split headings", "plan.x"),
    )]
    return cases


def bench_long(sectioner, runs: int) -> None:  # type: ignore[no-untyped-def]
    print(f"long text (median of {runs}):")
    for name, text in long_texts():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            note = sectioner.structure(text)
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        print(f"{name:>22}: {len(text):>7} chars {median * 1000:7.0f} ms {len(text) / median / 1000:6.0f}k chars/s"
              f" ({len(note.sections)} sections, {len(note.findings)} findings,"
              f" {len(note.dictation_commands)} commands)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--long-runs", type=int, default=3)
    parser.add_argument("--no-long", action="store_true", help="skip the long texts")
    args = parser.parse_args()

    from service.config import load_settings
    from service.sections.pipeline import Sectioner

    settings = load_settings()
    started = time.perf_counter()
    sectioner = Sectioner.from_file(settings.sections.rules_file)
    build_ms = (time.perf_counter() - started) * 1000
    punctuated = transcript()
    unpunctuated = re.sub(r"[^\w\s'-]", "", punctuated).lower()
    print(f"pipeline build: {build_ms:.0f} ms; transcript: {len(punctuated.split())} words")
    for name, text in (("punctuated", punctuated), ("unpunctuated", unpunctuated)):
        sectioner.structure(text)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            note = sectioner.structure(text)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{name:>13}: median {statistics.median(times):.1f} ms, p95 {sorted(times)[int(0.95 * len(times))]:.1f} ms"
              f" ({len(note.sections)} sections, {len(note.findings)} findings, {args.runs} runs)")
    if not args.no_long:
        bench_long(sectioner, args.long_runs)


if __name__ == "__main__":
    main()
