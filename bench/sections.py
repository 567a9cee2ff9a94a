"""Sections stage speed: pipeline build time and median time per ~600-word transcript.

    python bench/sections.py [--runs 200]

The transcript is the five speech fixtures' reference texts run together (Whisper-style punctuation), topped up
to 600 words, plus an all-lowercase unpunctuated copy: both are timed.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
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


if __name__ == "__main__":
    main()
