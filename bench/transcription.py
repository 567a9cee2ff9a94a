"""Service overhead against the raw engine, measured in one run on the same audio.

    python bench/transcription.py [--model tiny.en] [--rounds 3] [--concurrency 2]

Raw side: ``faster_whisper.WhisperModel.transcribe`` on the file's bytes, in its own process, with the same
decoding options and thread settings as the service (beam 5, language en, VAD on, word timestamps as configured,
int8 on CPU, one CTranslate2 thread per worker). Service side: ``fhir-scribe serve`` over HTTP on 127.0.0.1, in its own process. Rounds
alternate raw/service so drift in machine load hits both. Reported: wall time (median of rounds), audio seconds
per wall second, the ratio service/raw (goal <= 1.10), and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEECH = REPO / "tests" / "fixtures" / "speech"


def audio_files() -> list[Path]:
    return sorted(p for p in SPEECH.glob("dictation_*.ogg"))


def run_raw(model: str, concurrency: int) -> dict[str, float]:
    """Runs inside a child process: the bare engine, as a user of faster-whisper would call it."""
    import io

    import service  # noqa: F401  (same process environment as the service: telemetry off, hub offline)
    from faster_whisper import WhisperModel

    from service.config import load_settings
    from service.transcription.models import resolve_model

    settings = load_settings().transcription
    source = resolve_model(model, settings.model_cache_dir)
    engine = WhisperModel(str(source.path), device="cpu", compute_type="int8", cpu_threads=settings.cpu_threads,
                          num_workers=settings.num_workers)
    blobs = [p.read_bytes() for p in audio_files()]

    def one(data: bytes) -> None:
        segments, _ = engine.transcribe(io.BytesIO(data), beam_size=settings.beam_size, language="en",
                                        vad_filter=True, word_timestamps=settings.word_timestamps)
        for _ in segments:
            pass

    one(blobs[0])  # warm-up, as the service warms up at start
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, blobs))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_service(url: str, concurrency: int) -> float:
    import httpx

    blobs = [p.read_bytes() for p in audio_files()]

    def one(data: bytes) -> None:
        response = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a", data)}, timeout=600)
        response.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, blobs))
    return time.perf_counter() - started


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--raw-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_child:
        print(json.dumps(run_raw(args.model, args.raw_child)))
        return

    from service.audio import decode
    from service.config import AudioLimits
    from tests.conftest import start_server, stop_server

    audio_s = sum(decode(p.read_bytes(), AudioLimits()).duration_s for p in audio_files())
    print(f"model {args.model}; {len(audio_files())} files, {audio_s:.1f} s of speech; {os.cpu_count()} cores; "
          f"{args.rounds} rounds")
    results = []
    for concurrency in args.concurrency:
        raw_walls, raw_rss, service_walls = [], [], []
        server = start_server(Path("/dev/null"), SCRIBE_TRANSCRIPTION__MODEL=args.model,
                              SCRIBE_LOGGING__LEVEL="WARNING")
        url = server.url
        try:
            run_service(url, concurrency)  # first pass touches every code path once
            for _ in range(args.rounds):
                child = subprocess.run([sys.executable, __file__, "--model", args.model, "--raw-child",
                                        str(concurrency)], capture_output=True, text=True, check=True)
                raw = json.loads(child.stdout.strip().splitlines()[-1])
                raw_walls.append(raw["wall_s"])
                raw_rss.append(raw["peak_rss_mb"])
                service_walls.append(run_service(url, concurrency))
            service_rss = peak_rss_mb(server.process.pid)
        finally:
            stop_server(server)
        raw_wall, service_wall = statistics.median(raw_walls), statistics.median(service_walls)
        results.append({
            "concurrency": concurrency, "raw_wall_s": round(raw_wall, 2), "service_wall_s": round(service_wall, 2),
            "ratio_service_over_raw": round(service_wall / raw_wall, 3),
            "raw_x_realtime": round(audio_s / raw_wall, 1), "service_x_realtime": round(audio_s / service_wall, 1),
            "raw_peak_rss_mb": round(max(raw_rss)), "service_peak_rss_mb": round(service_rss),
        })
    print(f"{'clients':>7} {'raw s':>7} {'svc s':>7} {'svc/raw':>8} {'raw xRT':>8} {'svc xRT':>8} "
          f"{'raw RSS':>8} {'svc RSS':>8}")
    for r in results:
        print(f"{r['concurrency']:>7} {r['raw_wall_s']:>7} {r['service_wall_s']:>7} {r['ratio_service_over_raw']:>8} "
              f"{r['raw_x_realtime']:>8} {r['service_x_realtime']:>8} {r['raw_peak_rss_mb']:>7}M "
              f"{r['service_peak_rss_mb']:>7}M")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"transcription-{args.model}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
