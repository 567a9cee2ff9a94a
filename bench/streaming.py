"""Live dictation over WebSocket: how soon words arrive, how good the streamed text is, what N streams cost.

    python bench/streaming.py [--streams 1,2,4] [--model tiny.en] [--max-streams N] [--service-tree DIR]
                              [--label NAME] [--fixtures N]

In one run, on one machine state:

1. Batch reference: the raw engine (``faster_whisper.WhisperModel``, the service's model path, int8 on CPU, the
   service's thread count, beam and language, VAD on, word timestamps) transcribes each speech fixture whole, as the
   SMART app's Stop does through the service. Its words' end times are where each word ends in the audio; its
   speed (x real time) puts the streams' load in context.
2. ``fhir-scribe serve`` (default settings, auth off) in its own process; a short warm-up stream.
3. For each N in --streams: the five fixtures are played in real time (tests/support/realtime.py: 100 ms PCM16
   appends at 24 kHz on a wall-clock schedule, 1 s of silence after, server VAD) in waves of N streams opened
   together; ceil(5 / N) waves, the last filled by starting the fixtures over, so every wave opens N streams.

Per level: time to first text (first delta, from the first audio sent); per-word emission latency (a delta's
arrival minus the end, in the batch transcript, of each word it carries; streamed words aligned to batch words
with difflib on normalised words, matched words only); WER of the streamed text (deltas joined) against the
batch text and against the reference, of the batch text and of the ``completed`` texts against the reference
(pooled over the fixtures the level played); the service process's CPU (/proc/<pid>/stat utime+stime) as cores
used on average and the busiest second; streams admitted / refused (HTTP 503 at the upgrade, or close 1013) and
``transcription_lagging`` errors; words confirmed live and the final decode's tail apart. Load averages at start
and end, and the whole machine's busy cores per level: the machine may be shared. The service's commit, uncommitted
changes and the live path's file digests are recorded, and checked again at the end (the code must not change
under a run).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import difflib
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEECH = REPO / "tests" / "fixtures" / "speech"
RATE = 24000
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
GOALS = {"median_word_latency_s": 1.0, "p95_word_latency_s": 2.0, "wer_points_over_batch": 2.0}


def audio_files() -> list[Path]:
    return sorted(SPEECH.glob("dictation_*.ogg"))


# --- text --------------------------------------------------------------------------------------------------------

def key(word: str) -> str:
    """A word as alignment compares it: lower case, letters and digits only."""
    return re.sub(r"[^\w]+", "", word.lower())


def simple_normalise(text: str) -> list[str]:
    """Lower case, punctuation stripped (a decimal point between digits kept, hyphens split words), numbers as
    they are: "58-year-old" -> 58 year old, "fifty eight" stays two words."""
    text = text.lower().replace("%", " percent ")
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    return re.sub(r"[^a-z0-9. ]+", " ", text.replace("'", "")).split()


def normaliser(name: str):
    if name == "simple":
        return simple_normalise
    from tests.support.wer import normalise  # the suite's: number words to digits

    return normalise


def pooled_wer(pairs: list[tuple[str, str]], norm) -> float:
    """Corpus WER (%) over (reference, hypothesis) pairs: all edits over all reference words."""
    from tests.support.wer import edits

    errors = words = 0
    for ref, hyp in pairs:
        r, h = norm(ref), norm(hyp)
        errors += edits(r, h)  # tests/support/wer.py
        words += len(r)
    return round(100 * errors / max(words, 1), 1)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


# --- batch reference (the raw engine) -------------------------------------------------------------------------

@dataclass
class Batch:
    text: str
    words: list[tuple[str, float]]  # (word, end s)
    duration_s: float
    first_word_end_s: float


def batch_reference(model: str) -> tuple[dict[str, Batch], dict[str, Any]]:
    import service  # noqa: F401  (same process environment as the service: telemetry off, hub offline)
    from faster_whisper import WhisperModel

    from service.config import load_settings
    from service.transcription.models import resolve_model

    settings = load_settings().transcription
    path = resolve_model(model, Path("~/.cache/fhir-scribe/models").expanduser()).path
    engine = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=settings.cpu_threads,
                          num_workers=1)

    def one(file: Path) -> Batch:
        segments, info = engine.transcribe(str(file), beam_size=settings.beam_size, language="en",
                                           vad_filter=True, word_timestamps=True)
        segments = list(segments)
        words = [(w.word, w.end) for s in segments for w in (s.words or [])]
        return Batch("".join(s.text for s in segments).strip(), words, info.duration,
                     words[0][1] if words else float("nan"))

    one(audio_files()[0])  # warm-up
    out: dict[str, Batch] = {}
    started = time.perf_counter()
    for file in audio_files():
        out[file.stem] = one(file)
    wall = time.perf_counter() - started
    audio_s = sum(b.duration_s for b in out.values())
    return out, {"model_path": str(path), "cpu_threads": settings.cpu_threads, "beam_size": settings.beam_size,
                 "wall_s": round(wall, 2), "audio_s": round(audio_s, 1), "x_realtime": round(audio_s / wall, 1)}


# --- streams ---------------------------------------------------------------------------------------------------

@dataclass
class Stream:
    fixture: str
    wave: int
    admitted: bool = False
    refused: str | None = None  # "http 503" | "close 1013" | other
    retry_after: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    audio_s: float = 0.0
    first_delta_s: float | None = None
    words: list[tuple[str, float, bool]] = field(default_factory=list)  # (streamed word, arrival s, final decode's)
    streamed_text: str = ""
    completed_text: str = ""
    last_completed_after_audio_s: float | None = None
    items: int = 0
    lag_errors: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    matched: list[tuple[str, float, bool]] = field(default_factory=list)  # (word, latency s, from the final decode)
    matched_words: int = 0
    batch_words: int = 0


async def play(url: str, fixture: str, pcm: bytes, wave: int) -> Stream:
    import websockets

    from tests.support.realtime import replay

    stream = Stream(fixture, wave, audio_s=len(pcm) / 2 / RATE)
    try:
        result = await replay(url, pcm, rate=RATE)
    except websockets.InvalidStatus as refusal:
        stream.refused = f"http {refusal.response.status_code}"
        stream.retry_after = refusal.response.headers.get("Retry-After")
        return stream
    stream.close_code, stream.close_reason = result.close_code, result.close_reason
    stream.admitted = result.close_code != 1013
    if result.close_code == 1013:
        stream.refused = "close 1013"
    committed: set[str] = set()  # a delta after its item's commit carries the final decode's words (the tail)
    for t, e in result.events:
        if e["type"] == "input_audio_buffer.committed":
            committed.add(e["item_id"])
        elif e["type"] == DELTA:
            if stream.first_delta_s is None:
                stream.first_delta_s = round(t, 2)
            stream.words += [(w, t, e["item_id"] in committed) for w in e["delta"].split()]
        elif e["type"] == "error":
            stream.errors.append(e["error"])
            stream.lag_errors += e["error"].get("code") == "transcription_lagging"
    completed = result.timed(COMPLETED)
    stream.items = len(completed)
    if completed:
        stream.last_completed_after_audio_s = round(completed[-1][0] - stream.audio_s, 2)
    stream.streamed_text, stream.completed_text = result.streamed_text, result.completed_text
    return stream


def align(stream: Stream, batch: Batch) -> None:
    """Latency of every streamed word matched to a batch word: its delta's arrival minus the batch word's end."""
    streamed = [(key(w), t, final) for w, t, final in stream.words if key(w)]
    batched = [(key(w), end) for w, end in batch.words if key(w)]
    matcher = difflib.SequenceMatcher(None, [s[0] for s in streamed], [b[0] for b in batched], autojunk=False)
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            word, arrived, final = streamed[block.a + i]
            stream.latencies.append(float(arrived - batched[block.b + i][1]))
            stream.matched.append((word, round(stream.latencies[-1], 2), final))
    stream.matched_words, stream.batch_words = len(stream.latencies), len(batched)


# --- the service process -----------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


class CpuMeter:
    """The service's CPU as cores used: on average over a level, and in its busiest second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []

    async def __aenter__(self) -> CpuMeter:
        self._start = (time.monotonic(), cpu_seconds(self.pid), machine_busy())
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_: Any) -> None:
        self._task.cancel()
        wall0, cpu0, (busy0, total0) = self._start
        busy1, total1 = machine_busy()
        self.wall_s = time.monotonic() - wall0
        self.cores = (cpu_seconds(self.pid) - cpu0) / self.wall_s
        self.machine_cores = (busy1 - busy0) / max(total1 - total0, 1) * os.cpu_count()

    async def _sample(self) -> None:
        last = (time.monotonic(), cpu_seconds(self.pid))
        while True:
            await asyncio.sleep(1.0)
            now = (time.monotonic(), cpu_seconds(self.pid))
            self.samples.append((now[1] - last[1]) / (now[0] - last[0]))
            last = now


def start_server(log_path: Path, tree: Path, **env: str) -> Any:
    """tests/conftest.py's start_server, from ``tree``: ``python -m service`` imports the package in its working
    directory before the editable install's (config/ and fhir_profiles/ still come from the install)."""
    import subprocess

    from tests.conftest import NO_AUTH, RunningServer, free_port, wait_until_ready

    port = free_port()
    environment = {**os.environ, **NO_AUTH, **env, "SCRIBE_SERVER__PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=tree, env=environment,
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, url + "/readyz", "the service")
    return RunningServer(url, process, log_path)


def service_code(tree: Path) -> dict[str, Any]:
    """Which code was measured: the checkout's commit, its uncommitted changes, the live path's files' digests."""
    import hashlib
    import subprocess

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True).stdout.strip()

    files = ["service/realtime/session.py", "service/realtime/listening.py", "service/transcription/streaming.py",
             "service/transcription/pool.py", "service/transcription/engine.py", "service/transcription/transcript.py",
             "service/config.py", "config/settings.yaml"]
    code: dict[str, Any] = {"tree": str(tree)}
    if tree.resolve() == REPO:
        code.update(commit=git("rev-parse", "--short", "HEAD"),
                    uncommitted=git("status", "--porcelain", "--", "service", "config").splitlines())
    code["sha256"] = {f: hashlib.sha256((tree / f).read_bytes()).hexdigest()[:12] for f in files}
    return code


async def streams_open(url: str) -> float | None:
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/metrics")
    match = re.search(r"^fhir_scribe_realtime_streams (\S+)$", response.text, re.M)
    return float(match.group(1)) if response.status_code == 200 and match else None


async def all_closed(url: str, timeout_s: float = 15.0) -> None:
    """Before the next wave: the service has let go of the previous wave's streams (else it would refuse)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await streams_open(url):
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.2)


async def level(url: str, pid: int, n: int, pcms: dict[str, bytes], batches: dict[str, Batch]) -> dict[str, Any]:
    names = list(pcms)
    waves = math.ceil(len(names) / n)
    streams: list[Stream] = []
    load_start = loadavg()
    async with CpuMeter(pid) as meter:
        for w in range(waves):
            await all_closed(url)
            chosen = [names[(w * n + i) % len(names)] for i in range(n)]
            streams += await asyncio.gather(*(play(url, name, pcms[name], w) for name in chosen))
    load_end = loadavg()

    played = [s for s in streams if s.admitted]
    for s in played:
        align(s, batches[s.fixture])
    latencies = [x for s in played for x in s.latencies]
    live = [lat for s in played for _, lat, final in s.matched if not final]
    tail = [lat for s in played for _, lat, final in s.matched if final]
    reference = {p.stem: p.with_suffix(".txt").read_text().strip() for p in audio_files()}
    wer: dict[str, dict[str, float]] = {}
    for norm_name in ("simple", "suite"):
        norm = normaliser(norm_name)
        wer[norm_name] = {
            "streamed_vs_batch": pooled_wer([(batches[s.fixture].text, s.streamed_text) for s in played], norm),
            "streamed_vs_reference": pooled_wer([(reference[s.fixture], s.streamed_text) for s in played], norm),
            "batch_vs_reference": pooled_wer([(reference[s.fixture], batches[s.fixture].text) for s in played],
                                             norm),
            "completed_vs_reference": pooled_wer([(reference[s.fixture], s.completed_text) for s in played], norm),
        }
    per_wave = [{"wave": w, "admitted": sum(s.admitted for s in streams if s.wave == w),
                 "refused": sum(s.refused is not None for s in streams if s.wave == w)} for w in range(waves)]
    first = [s.first_delta_s for s in played if s.first_delta_s is not None]
    finals = [s.last_completed_after_audio_s for s in played if s.last_completed_after_audio_s is not None]
    return {
        "streams": n, "waves": waves, "opened": len(streams), "admitted": len(played),
        "refused": sum(s.refused is not None for s in streams), "per_wave": per_wave,
        "refusals": sorted({f"{s.refused} Retry-After={s.retry_after}" for s in streams if s.refused}),
        "lag_errors": sum(s.lag_errors for s in streams),
        "other_errors": [e for s in streams for e in s.errors if e.get("code") != "transcription_lagging"],
        "first_text_s": {"median": percentile(first, 50), "max": max(first) if first else None},
        "first_word_end_in_audio_s": percentile([batches[s.fixture].first_word_end_s for s in played], 50),
        "word_latency_s": {"median": percentile(latencies, 50), "p95": percentile(latencies, 95),
                           "max": percentile(latencies, 100), "words": len(latencies),
                           "batch_words": sum(s.batch_words for s in played),
                           "over_2s": int(sum(x > 2 for x in latencies)),
                           "live": {"median": percentile(live, 50), "p95": percentile(live, 95), "words": len(live),
                                    "over_2s": int(sum(x > 2 for x in live))},
                           "final_tail": {"median": percentile(tail, 50), "p95": percentile(tail, 95),
                                          "words": len(tail), "over_2s": int(sum(x > 2 for x in tail))}},
        "completed_after_audio_end_s": {"median": percentile(finals, 50), "max": max(finals) if finals else None},
        "wer_pct": wer,
        "service_cpu_cores": {"mean": round(meter.cores, 2),
                              "busiest_second": round(max(meter.samples), 2) if meter.samples else None},
        "machine_cpu_cores": round(meter.machine_cores, 2),
        "wall_s": round(meter.wall_s, 1), "loadavg_start": load_start, "loadavg_end": load_end,
        "per_stream": [{"fixture": s.fixture, "wave": s.wave, "admitted": s.admitted, "refused": s.refused,
                        "retry_after": s.retry_after, "close_code": s.close_code, "close_reason": s.close_reason,
                        "first_text_s": s.first_delta_s, "matched_words": s.matched_words,
                        "batch_words": s.batch_words,
                        "word_latency_median_s": percentile(s.latencies, 50),
                        "word_latency_p95_s": percentile(s.latencies, 95),
                        "completed_after_audio_end_s": s.last_completed_after_audio_s,
                        "items": s.items, "lag_errors": s.lag_errors, "errors": s.errors,
                        "streamed_text": s.streamed_text, "completed_text": s.completed_text,
                        "word_latencies": [[w, lat, int(final)] for w, lat, final in s.matched]} for s in streams],
    }


def goals(levels: list[dict[str, Any]], max_streams: int) -> list[dict[str, Any]]:
    out = []
    one = next((r for r in levels if r["streams"] == 1), None)
    if one:
        lat = one["word_latency_s"]
        wer = one["wer_pct"]["simple"]
        gap = round(wer["streamed_vs_reference"] - wer["batch_vs_reference"], 1)
        out += [
            {"goal": "1 stream: median word latency <= 1.0 s", "value": lat["median"],
             "met": lat["median"] is not None and lat["median"] <= GOALS["median_word_latency_s"]},
            {"goal": "1 stream: p95 word latency <= 2.0 s", "value": lat["p95"],
             "met": lat["p95"] is not None and lat["p95"] <= GOALS["p95_word_latency_s"]},
            {"goal": "1 stream: streamed WER within 2 points of batch (vs reference)",
             "value": f"{wer['streamed_vs_reference']} vs {wer['batch_vs_reference']} ({gap:+} points)",
             "met": gap <= GOALS["wer_points_over_batch"]},
        ]
    four = next((r for r in levels if r["streams"] == 4), None)
    if four:
        expected = min(4, max_streams)
        per_wave_ok = all(w["admitted"] == expected and w["refused"] == 4 - expected for w in four["per_wave"])
        told = all("http 503" in r and "Retry-After=None" not in r for r in four["refusals"])
        out.append({"goal": f"4 streams: {expected} admitted, {4 - expected} refused (503 + Retry-After) per wave",
                    "value": " / ".join(f"{w['admitted']}+{w['refused']}" for w in four["per_wave"])
                    + f"; {', '.join(four['refusals']) or 'no refusals'}",
                    "met": per_wave_ok and told})
    return out


async def run_levels(url: str, pid: int, counts: list[int], batches: dict[str, Batch],
                     fixtures: int | None) -> list[dict[str, Any]]:
    from tests.support.realtime import pcm16, replay

    pcms = {p.stem: pcm16(p, RATE) for p in audio_files()[:fixtures]}
    warm = pcms[audio_files()[0].stem][: 4 * RATE * 2]
    await replay(url, warm, rate=RATE)  # warm-up: the first stream's one-off costs stay out of the figures
    results = []
    for n in counts:
        print(f"... {n} stream(s)", flush=True)
        results.append(await level(url, pid, n, pcms, batches))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--streams", default="1,2,4", help="comma-separated concurrent stream counts")
    parser.add_argument("--fixtures", type=int, default=None, help="only the first N fixtures (a quick check)")
    parser.add_argument("--service-tree", type=Path, default=REPO,
                        help="run the service from this source tree (e.g. a `git archive` of a commit); default: "
                        "this checkout, uncommitted changes included")
    parser.add_argument("--max-streams", type=int, default=None,
                        help="the service's realtime.max_streams (default: its settings), e.g. 4 to see 4 streams run")
    parser.add_argument("--label", default="", help="suffix of the results file: streaming-<date>[-label].json")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]

    from service.config import load_settings
    from tests.conftest import stop_server
    from tests.support.realtime import ws_url

    started_at = datetime.datetime.now(datetime.timezone.utc)
    code = service_code(args.service_tree)  # again at the end: the code must not change under the run
    load_start = loadavg()
    print(f"model {args.model}; {len(audio_files())} fixtures; {os.cpu_count()} cores; load average {load_start}",
          flush=True)
    batches, raw = batch_reference(args.model)
    print(f"raw engine batch: {raw['audio_s']} s of audio in {raw['wall_s']} s = {raw['x_realtime']}x real time",
          flush=True)
    realtime = load_settings().realtime
    log_path = Path(tempfile.mkdtemp(prefix="bench-streaming-")) / "service.log"  # kept, for a look afterwards
    overrides = {"SCRIBE_TRANSCRIPTION__MODEL": args.model}
    if args.max_streams is not None:
        overrides["SCRIBE_REALTIME__MAX_STREAMS"] = str(args.max_streams)
        realtime = realtime.model_copy(update={"max_streams": args.max_streams})
    server = start_server(log_path, args.service_tree, **overrides)
    try:
        levels = asyncio.run(run_levels(ws_url(server.url), server.process.pid, counts, batches, args.fixtures))
    finally:
        stop_server(server)
    problems = [line for line in log_path.read_text(errors="replace").splitlines()
                if "Traceback" in line or re.search(r'"level": "(ERROR|WARNING|CRITICAL)"', line)]
    load_end = loadavg()
    checked = goals(levels, realtime.max_streams)
    import faster_whisper

    result = {
        "date": started_at.date().isoformat(), "started_at": started_at.isoformat(timespec="seconds"),
        "model": args.model, "cores": os.cpu_count(), "python": platform.python_version(),
        "faster_whisper": faster_whisper.__version__,
        "loadavg_start": load_start, "loadavg_end": load_end, "service_code": code,
        "service_code_changed_during_run": service_code(args.service_tree) != code,
        "service_settings": {"realtime": realtime.model_dump(), "transcription_num_workers":
                             load_settings().transcription.num_workers,
                             "cpu_threads": load_settings().transcription.cpu_threads},
        "wer_normalisers": {"simple": simple_normalise.__doc__.split("\n")[0],
                            "suite": "tests/support/wer.py normalise: also number words to digits"},
        "raw_engine_batch": raw,
        "batch_text": {name: b.text for name, b in batches.items()},
        "levels": levels, "goals": checked, "service_log_problems": problems[:50],
    }
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"streaming-{result['date']}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(result, indent=2))

    if result["service_code_changed_during_run"]:
        print("WARNING: the service's code changed during the run (see service_code in the JSON)")
    dirty = " + uncommitted changes" if code.get("uncommitted") else ""
    print(f"\nservice code {code.get('commit', code['tree'])}{dirty}")
    print(f"raw engine batch x realtime: {raw['x_realtime']}; load average start {load_start}, end {load_end}")
    print(f"{'streams':>7} {'admit/ref':>9} {'1st text':>8} {'lat med':>7} {'lat p95':>7} {'words':>7} "
          f"{'WER str':>7} {'batch':>6} {'compl':>6} {'str~bat':>7} {'lag':>4} {'svc cores':>9} {'machine':>7}")
    for r in levels:
        w = r["wer_pct"]["simple"]
        print(f"{r['streams']:>7} {str(r['admitted']) + '/' + str(r['refused']):>9} "
              f"{r['first_text_s']['median'] or '-':>8} {r['word_latency_s']['median'] or '-':>7} "
              f"{r['word_latency_s']['p95'] or '-':>7} "
              f"{str(r['word_latency_s']['words']) + '/' + str(r['word_latency_s']['batch_words']):>7} "
              f"{w['streamed_vs_reference']:>7} {w['batch_vs_reference']:>6} {w['completed_vs_reference']:>6} "
              f"{w['streamed_vs_batch']:>7} {r['lag_errors']:>4} {r['service_cpu_cores']['mean']:>9} "
              f"{r['machine_cpu_cores']:>7}")
    for r in levels:
        live, tail = r["word_latency_s"]["live"], r["word_latency_s"]["final_tail"]
        print(f"{r['streams']} stream(s): words confirmed live median {live['median']} s p95 {live['p95']} s "
              f"({live['words']} words, {live['over_2s']} > 2 s); final decode's tail median {tail['median']} s "
              f"({tail['words']} words, {tail['over_2s']} > 2 s)")
    print("(WER %, simple normaliser: lower case, punctuation stripped, numbers as written; suite normaliser in "
          "the JSON)")
    for g in checked:
        print(f"{'PASS' if g['met'] else 'MISS'}  {g['goal']}: {g['value']}")
    if problems:
        print(f"service log: {len(problems)} warning/error line(s) (in {path.name}; whole log {log_path})")
    print(f"-> {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
