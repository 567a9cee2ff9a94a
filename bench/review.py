"""Review flags against the engine's real errors: do they point at what it got wrong, and how much do they ask
the clinician to read twice?

    python bench/review.py [--models tiny.en,base]

Every speech fixture with its chart (tests/support/charts.py review_dictations: the general dictations, the
drug-heavy ones and the review set in other voices) is transcribed as the service does it (the chart's terms bias
the engine; word timestamps on), structured, and reviewed with the service's own review stage. Each transcript is
aligned to its reference after Whisper's English normalizer (tests/support/errors.py), which gives the wrong words.

Reported per model:
- wrong words covered: the engine's errors (substituted, inserted or missing words) a flag touches, all kinds of
  flag together and low-confidence flags alone;
- words flagged: the share of the transcript's words under some flag (what the clinician reads twice);
- chart drugs wrong: drug mentions from the chart that did not come out right, and how many were flagged;
- false alarms: flags touching no error, per 100 words; and, on the correct reference texts, how often the chart
  checks fire (sound-alike and dose-vs-chart flags on text with nothing wrong);
- the same for the six dictations in other voices alone (the hardest: the thresholds are chosen there);
- the curve: low_confidence_below from 0.1 to 0.8 (the bar for rare words 0.15 above it), coverage against words
  flagged, all fixtures and the six;
- time: the review stage's own time against the engine's, in the same run.
Results also go to bench/results/review-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CURVE = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)


@dataclass
class Case:
    name: str
    reference: str
    transcript: object
    note: object
    unheard: list
    terms: list
    engine_s: float
    other_voice: bool  # one of speech_review/'s six, in voices the first eight are not (their WER is the highest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny.en,base")
    args = parser.parse_args()

    from service.config import load_settings

    settings = load_settings()
    print(f"review settings: {settings.review.model_dump()}")
    for model in args.models.split(","):
        cases = transcribed(model, settings)
        chosen = measure(cases, settings.review)
        print(f"\n== {model}: {len(cases)} dictations, {chosen['words']} words, {chosen['errors']} errors "
              f"(WER {chosen['wer']:.1%})")
        show(chosen)
        voices = [case for case in cases if case.other_voice]
        harder = measure(voices, settings.review)
        print(f"  the {len(voices)} in other voices alone (WER {harder['wer']:.1%}): words flagged "
              f"{harder['flagged']:.1%}, wrong words covered {harder['covered']:.1%}")
        print("  curve (low_confidence_below, low_confidence_rare_below 0.15 above it: words flagged -> wrong words "
              "covered, all flags / low-confidence only; in other voices)")
        curve = []
        for below in CURVE:
            bars = {"low_confidence_below": below, "low_confidence_rare_below": min(below + 0.15, 0.99)}
            point = measure(cases, settings.review.model_copy(update=bars))
            hard = measure(voices, settings.review.model_copy(update=bars))
            curve.append({**bars, "flagged": point["flagged"], "covered": point["covered"],
                          "covered_low_confidence": point["covered_by"].get("low-confidence", 0.0),
                          "other_voices": {"flagged": hard["flagged"], "covered": hard["covered"]}})
            print(f"    {below:4.2f}/{bars['low_confidence_rare_below']:4.2f}: {point['flagged']:6.1%} -> "
                  f"{point['covered']:6.1%} / {point['covered_by'].get('low-confidence', 0.0):6.1%};   "
                  f"{hard['flagged']:6.1%} -> {hard['covered']:6.1%}")
        on_references = reference_alarms(cases, settings.review)
        print(f"  chart checks on the correct reference texts ({on_references['words']} words): "
              + (", ".join(f"{kind} {n}" for kind, n in on_references["flags"].items()) or "no flags"))
        out = REPO / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"review-{model}.json").write_text(json.dumps(
            {"model": model, "settings": settings.review.model_dump(), "chosen": chosen, "other_voices": harder,
             "curve": curve,
             "on_references": on_references}, indent=2, default=str))
    return 0


def transcribed(model: str, settings) -> list[Case]:  # type: ignore[no-untyped-def]
    from service.audio import decode
    from service.sections.pipeline import Sectioner
    from service.transcription.coverage import unheard
    from service.transcription.engine import Transcriber
    from service.transcription.models import resolve_model
    from service.vocabulary.bias import biased, fitted
    from tests.support.charts import review_dictations

    engine = Transcriber(resolve_model(model, settings.transcription.model_cache_dir), settings.transcription)
    sectioner = Sectioner.from_file(settings.sections.rules_file)
    cases = []
    for dictation in review_dictations():
        terms = dictation.terms()
        audio = decode(dictation.audio, settings.audio)
        options = biased(engine.default_options(), *fitted(terms, settings.vocabulary))
        started = time.perf_counter()
        transcript = engine.transcribe(audio, options)
        engine_s = time.perf_counter() - started
        note = sectioner.structure(transcript.text)
        cases.append(Case(dictation.name, dictation.reference, transcript, note, unheard(audio.samples, transcript),
                          terms, engine_s, dictation.voice is not None))
    return cases


def measure(cases: list[Case], review_settings) -> dict:  # type: ignore[no-untyped-def]
    from service.review import review
    from service.review.flags import heard_words
    from tests.support.errors import errors, normalized

    words_total = flagged_total = errors_total = reference_words = 0
    covered = Counter()
    alarms = Counter()
    flags_by_kind = Counter()
    drugs_wrong = drugs_flagged = drugs_said = 0
    review_s = engine_s = 0.0
    missed_drugs = []
    for case in cases:
        started = time.perf_counter()
        flags = review(case.transcript, case.note, case.unheard, case.terms, review_settings)
        review_s += time.perf_counter() - started
        engine_s += case.engine_s
        words = heard_words(case.transcript, case.note.text)
        found = errors(case.reference, [w.text for w in words])
        touched = {flag_index: {i for i, w in enumerate(words) if w.start < flag.end and flag.start < w.end}
                   for flag_index, flag in enumerate(flags)}
        flagged = set().union(*touched.values()) if touched else set()
        by_kind = defaultdict(set)
        for flag_index, flag in enumerate(flags):
            by_kind[flag.kind] |= touched[flag_index]
            flags_by_kind[flag.kind] += 1
            if not any(error & touched[flag_index] for error in found.errors):
                alarms[flag.kind] += 1
        words_total += len(words)
        flagged_total += len(flagged)
        errors_total += len(found.errors)
        reference_words += found.reference_words
        for error in found.errors:
            covered["all"] += bool(error & flagged)
            for kind, indices in by_kind.items():
                covered[kind] += bool(error & indices)
        # Chart drug mentions that came out wrong: a substituted or missing reference token inside the name.
        reference = normalized(case.reference)
        for term in case.terms:
            if not term.is_drug:
                continue
            name = normalized(term.name)
            for at in (i for i in range(len(reference)) if reference[i:i + len(name)] == name):
                drugs_said += 1
                hit = [e for e, position, kind in zip(found.errors, found.reference_positions, found.kinds)
                       if kind != "insert" and at <= position < at + len(name)]
                if hit:
                    drugs_wrong += 1
                    if any(e & flagged for e in hit):
                        drugs_flagged += 1
                    else:
                        missed_drugs.append(f"{case.name}: {term.name}")
    return {
        "words": words_total, "errors": errors_total, "wer": errors_total / max(reference_words, 1),
        "flagged": flagged_total / max(words_total, 1), "covered": covered["all"] / max(errors_total, 1),
        "covered_by": {kind: covered[kind] / max(errors_total, 1) for kind in flags_by_kind},
        "flags": dict(flags_by_kind), "false_alarms_per_100_words": {
            kind: 100 * alarms[kind] / max(words_total, 1) for kind in flags_by_kind},
        "drugs_said": drugs_said, "drugs_wrong": drugs_wrong, "drugs_wrong_flagged": drugs_flagged,
        "drugs_missed": missed_drugs, "review_s": review_s, "engine_s": engine_s,
    }


def reference_alarms(cases: list[Case], review_settings) -> dict:  # type: ignore[no-untyped-def]
    """The chart checks on the reference texts, where nothing is wrong: every sound-alike flag there is a false
    alarm; a dose-vs-chart flag is one unless the dictation changes that dose (the fixtures' dose_changes)."""
    from service.review.chart import chart_flags
    from tests.support.charts import review_dictations
    from tests.support.errors import normalized

    changes = {d.name: d.dose_changes for d in review_dictations()}
    counts = Counter()
    words = 0
    for case in cases:
        words += len(normalized(case.reference))
        for flag in chart_flags(case.reference, case.terms, review_settings):
            intended = flag.kind == "dose-vs-chart" and any(d in flag.text.lower() for d in changes[case.name])
            counts[f"{flag.kind} (a dose change dictated)" if intended else flag.kind] += 1
    return {"words": words, "flags": dict(counts)}


def show(figures: dict) -> None:
    print(f"  words flagged: {figures['flagged']:.1%}; wrong words covered: {figures['covered']:.1%} (all flags)")
    for kind, share in sorted(figures["covered_by"].items()):
        print(f"    {kind:18} {figures['flags'][kind]:4} flags, cover {share:6.1%} of errors, "
              f"false alarms {figures['false_alarms_per_100_words'][kind]:.2f} per 100 words")
    print(f"  chart drug mentions: {figures['drugs_said']}, came out wrong: {figures['drugs_wrong']}, flagged: "
          f"{figures['drugs_wrong_flagged']}" + (f" (missed: {', '.join(figures['drugs_missed'])})"
                                                 if figures["drugs_missed"] else ""))
    print(f"  time: review {figures['review_s'] * 1000:.0f} ms against the engine's {figures['engine_s']:.1f} s "
          f"({figures['review_s'] / max(figures['engine_s'], 1e-9):.2%})")


if __name__ == "__main__":
    sys.exit(main())
