"""`fhir-scribe demo` (what `make serve` runs): stops its FHIR server on SIGTERM as on Ctrl+C, and refuses to
start, saying why, when its ports are taken."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from service.demo import port_free, wait_until_ready
from tests.conftest import REPO, free_port


def _demo(port: int, fhir_port: int, log) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "service", "demo", "--port", str(port), "--fhir-port",
                             str(fhir_port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_demo_stops_its_fhir_server_on_either_signal(tmp_path, stop):
    port, fhir_port = free_port(), free_port()
    with (tmp_path / "demo.log").open("wb") as log:
        demo = _demo(port, fhir_port, log)
        try:
            wait_until_ready(demo, f"http://127.0.0.1:{port}/readyz", "the demo", timeout_s=120)
            assert not port_free(fhir_port)
            demo.send_signal(stop)
            demo.wait(timeout=30)
        finally:
            demo.kill()
    deadline = time.monotonic() + 15
    while not port_free(fhir_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert port_free(fhir_port), (tmp_path / "demo.log").read_text()
    assert "Ctrl+C" in (tmp_path / "demo.log").read_text()


def test_taken_ports_are_refused_with_a_clear_message(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "service", "demo", "--port", str(taken), "--fhir-port",
                                 str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"port {taken} already in use" in result.stderr and "--port 9080 --fhir-port 9081" in result.stderr
