"""Running a test daemon (HAProxy, nginx) in the foreground: wait until it listens, stop it, for the drivers in
tests/support that each only know their own configuration."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def wait_listening(process: subprocess.Popen[bytes], port: int, timeout_s: float, name: str,
                   log: Callable[[], str], error: type[Exception]) -> None:
    """Return once 127.0.0.1:`port` accepts connections; `error` (with the daemon's log) if it exits or never does
    within `timeout_s` (then it is stopped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(f"{name} exited with {process.returncode}:\n{log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise error(f"{name} did not listen on {port} within {timeout_s:g} s:\n{log()}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (a fast stop for both HAProxy and nginx), SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
