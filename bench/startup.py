"""Start-up: how long from starting the service to GET /readyz 200 (the model loaded and warmed up).

    python bench/startup.py [--rounds 5] [--container] [--json PATH]

The goal: ready within 10 s of `podman run` (READY_WITHIN_S in tests/container/test_image.py). tests/container/test_image.py checks that the image
becomes ready and serves; the seconds are measured here, where a busy machine (the test suite running beside,
another JVM starting) shows in the load averages printed with them instead of failing a test.

* process: ``python -m service serve`` (default settings, auth off, a free port), ``--rounds`` times.
* ``--container``: ``podman run`` of the test image (localhost/fhir-scribe:test, as tests/container builds it;
  built here first if it is missing, which takes minutes), ``--rounds`` times, as tests/container runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOAL_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def process_once(work: Path, timeout_s: float = 300) -> float:
    port = free_port()
    env = {**os.environ, "SCRIBE_AUTH__ENABLED": "false", "SCRIBE_SERVER__PORT": str(port)}
    log_path = work / f"serve-{port}.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        while time.monotonic() - started < timeout_s:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"not ready within {timeout_s:g} s:\n{log_path.read_text()[-3000:]}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def container_once(work: Path) -> float:
    from tests.support.container import Container

    running = Container(port=free_port(), env={"SCRIBE_AUTH__ENABLED": "false"}, log_path=work / "container.log")
    try:
        running.start(ready_timeout_s=300)
        assert running.seconds_to_ready is not None
        return running.seconds_to_ready
    finally:
        running.remove()


def ensure_image(work: Path) -> None:
    from tests.support.container import IMAGE, build_image, image_exists, require_podman, standin_base

    require_podman()
    if not image_exists(IMAGE):
        print(f"building {IMAGE} (minutes) ...", flush=True)
        build_image(standin_base(work), work / "build.log")


def summary(name: str, seconds: list[float]) -> dict:
    result = {"rounds": len(seconds), "median_s": round(statistics.median(seconds), 2),
              "max_s": round(max(seconds), 2), "all_s": [round(s, 2) for s in seconds],
              "goal_s": GOAL_S, "met": max(seconds) < GOAL_S}
    print(f"{name}: median {result['median_s']:.2f} s, max {result['max_s']:.2f} s over {len(seconds)} starts "
          f"(goal < {GOAL_S:g} s: {'met' if result['met'] else 'NOT met'})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--container", action="store_true", help="also `podman run` of the test image")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "loadavg_start": loadavg()}}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        process_once(work)  # the first start also fills the page cache (model files): not counted
        report["process"] = summary("process (python -m service serve -> /readyz 200)",
                                    [process_once(work) for _ in range(args.rounds)])
        if args.container:
            ensure_image(work)
            container_once(work)  # warm, as above
            report["container"] = summary("container (podman run -> /readyz 200)",
                                          [container_once(work) for _ in range(args.rounds)])
    report["machine"]["loadavg_end"] = loadavg()
    print(f"load averages: start {report['machine']['loadavg_start']}, end {report['machine']['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
