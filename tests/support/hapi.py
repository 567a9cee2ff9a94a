"""Build and run the minimal HAPI FHIR JPA server of tests/hapi (R4, in-memory H2, base path /fhir).

Independent of the rest of the project: only the standard library and httpx.

    jar = build()                                   # mvn package, only when the jar is missing or stale
    with HapiServer(log_path=tmp_path / "hapi.log") as hapi:   # start() on enter, stop() on exit
        httpx.get(hapi.base + "/metadata")
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

HAPI_DIR = Path(__file__).resolve().parent.parent / "hapi"
POM = HAPI_DIR / "pom.xml"
JAR = HAPI_DIR / "target" / "hapi-test-server.jar"

# Measured on the 2-core box: the live heap after start-up plus a round of validation is ~350 MB, so 1 GB leaves room;
# the serial collector and C1-only JIT start faster and use less memory than the defaults for a short-lived server.
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")


class HapiError(RuntimeError):
    """The HAPI test server could not be built or started."""


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _newest_input_mtime() -> float:
    inputs = [POM, *(p for p in (HAPI_DIR / "src").rglob("*") if p.is_file())]
    return max(p.stat().st_mtime for p in inputs)


def needs_build() -> bool:
    return not JAR.exists() or JAR.stat().st_mtime < _newest_input_mtime()


def build(force: bool = False, timeout: float = 1800.0) -> Path:
    """Run `mvn -q -B -f tests/hapi/pom.xml package -DskipTests` if the jar is missing or older than its inputs.

    The Maven cache (~/.m2) and target/ are reused, so a rebuild after a source change takes seconds; the first build
    downloads ~250 MB of dependencies. Concurrent callers (e.g. pytest-xdist workers) are serialised by a file lock.
    """
    if not force and not needs_build():
        return JAR
    mvn = shutil.which("mvn")
    if mvn is None:
        raise HapiError("Maven ('mvn') is not on PATH: it is needed to build the HAPI FHIR test server (tests/hapi)")
    JAR.parent.mkdir(parents=True, exist_ok=True)
    with open(JAR.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and not needs_build():  # another process built it while we waited
            return JAR
        cmd = [mvn, "-q", "-B", "-f", str(POM), "package", "-DskipTests"]
        try:
            proc = subprocess.run(cmd, cwd=HAPI_DIR, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x for x in (e.stdout, e.stderr) if x)
            raise HapiError(f"Maven build of the HAPI test server timed out after {timeout:.0f}s:\n{_tail(out)}") from e
        if proc.returncode != 0 or not JAR.exists():
            raise HapiError(f"Maven build of the HAPI test server failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                            f"{_tail(proc.stdout + proc.stderr)}")
        os.utime(JAR)  # the jar is newer than every input even if Maven left it untouched
    return JAR


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise HapiError("'java' (17+) is not on PATH: it is needed to run the HAPI FHIR test server")
    return java


class HapiServer:
    """One HAPI FHIR server process on 127.0.0.1; all data is in memory and gone when it stops.

    log_path: where the server's output goes (default: a new temporary directory; pass a pytest tmp path).
    """

    def __init__(self, log_path: str | os.PathLike | None = None, jar: str | os.PathLike | None = None,
                 jvm_args: tuple[str, ...] | list[str] = ()):
        self._log_path = Path(log_path) if log_path is not None else None
        self._jar = Path(jar) if jar is not None else None
        self._jvm_args = tuple(jvm_args)
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None
        self.startup_seconds: float | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise HapiError("HAPI test server not started")
        return self._port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def start(self, port: int | None = None, heap: str = "1g", timeout: float = 240.0) -> HapiServer:
        """Start the server and wait until GET /fhir/metadata answers 200 (typically 11-15 s here)."""
        if self.running:
            raise HapiError(f"HAPI test server already running at {self.base}")
        jar = self._jar or build()
        if self._log_path is None:
            self._log_path = Path(tempfile.mkdtemp(prefix="hapi-test-server-")) / "hapi.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._port = port or free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", self._port)) == 0:
                raise HapiError(f"port {self._port} on 127.0.0.1 is already in use")
        cmd = [_java(), f"-Xmx{heap}", *JVM_FLAGS, *self._jvm_args, "-jar", str(jar), "--port", str(self._port)]
        t0 = time.monotonic()
        with open(self._log_path, "wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self._log_path.parent, start_new_session=True)
        url = self.base + "/metadata"
        last = "no answer yet"
        with httpx.Client(timeout=10.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._proc = None
                    raise HapiError(f"HAPI test server exited with code {code} during start-up "
                                    f"(log {self._log_path}):\n{_tail(self.log())}")
                try:
                    r = client.get(url, headers={"Accept": "application/fhir+json"})
                    if r.status_code == 200:
                        break
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last = f"{type(e).__name__}: {e}"
                if time.monotonic() - t0 > timeout:
                    self.stop()
                    raise HapiError(f"HAPI test server not ready at {url} after {timeout:.0f}s (last: {last}; "
                                    f"log {self._log_path}):\n{_tail(self.log())}")
                time.sleep(0.25)
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Spring and Jetty shut down cleanly), then SIGKILL if it has not exited within `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> HapiServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
