"""The container image, built and run with podman as CI can: no container registry is reachable, so the base is a
stand-in for python:3.11-slim-bookworm made from Debian's packages (mmdebstrap), built once and reused.

Recipe (measured on this kind of machine, see shared/components.md "Containers"): podman with runc, the runtime's
limits lowered (the sandbox refuses raising them), the host's network for builds (pip reaches PyPI) and for runs
(the FHIR server of the tests listens on the host's 127.0.0.1). The wheels pip downloads are kept between builds in
a wheelhouse on the host, mounted into the build stages; the host's CA bundle is mounted over the image's for pip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent.parent
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
IMAGE = "localhost/fhir-scribe:test"
USER_ID = 10001

# The stand-in: what python:3.11-slim-bookworm offers the Dockerfile (Debian bookworm's Python 3.11 as `python`,
# venv, pip, sh, useradd, CA certificates; no compiler), with pip allowed to install (no EXTERNALLY-MANAGED). Docs,
# man pages and translations are left out, as Debian's slim images do.
STANDIN_PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
MMDEBSTRAP = [
    "mmdebstrap", "--variant=minbase", f"--include={STANDIN_PACKAGES}",
    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
    "bookworm",
]
STANDIN_CHANGES = ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', "ENV LANG=C.UTF-8",
                   'CMD ["python3"]']
# The tag names the recipe: a changed recipe builds a new stand-in, an unchanged one is reused across runs.
STANDIN = "localhost/fhir-scribe-standin-base:" + hashlib.sha256(
    json.dumps([MMDEBSTRAP, STANDIN_CHANGES]).encode()).hexdigest()[:16]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n"
                           f"{result.stderr[-4000:]}")
    return result


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_size(name: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())


def image_config(name: str) -> dict:
    """The image's run-time config (User, Env, Entrypoint, ...), with its Healthcheck (podman keeps that apart)."""
    found = json.loads(podman("image", "inspect", name).stdout)[0]
    return {**found["Config"], "Healthcheck": found.get("Healthcheck")}


def standin_base(work_dir: Path) -> str:
    """The stand-in base image, built by mmdebstrap and imported (about 30 s), unless an earlier run left it. Stand-ins
    of an older recipe are removed once no image is built on them any more."""
    repository = STANDIN.rsplit(":", 1)[0]
    for older in podman("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split():
        if older != STANDIN:
            podman("rmi", older, check=False)
    if image_exists(STANDIN):
        return STANDIN
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tar = Path(tmp) / "base.tar"
        with (work_dir / "mmdebstrap.log").open("w") as log:
            done = subprocess.run([*MMDEBSTRAP, str(tar)], stdout=log, stderr=subprocess.STDOUT, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"mmdebstrap exited {done.returncode}:\n{(work_dir / 'mmdebstrap.log').read_text()[-4000:]}")
        changes = [arg for change in STANDIN_CHANGES for arg in ("--change", change)]
        podman("import", *changes, str(tar), STANDIN, timeout=600)
    return STANDIN


def _wheelhouse() -> Path:
    """The wheels the image's build downloaded or built, kept on the host between runs (pip's own HTTP cache keeps
    nothing here: the registry proxy strips the caching headers)."""
    cache = Path.home() / ".cache" / "fhir-scribe" / "container-wheels"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _ca_bundle() -> Path | None:
    for candidate in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_image(base: str, log_path: Path, tag: str = IMAGE, context: Path = REPO, timeout: float = 1800) -> float:
    """`podman build` of the project's Dockerfile on ``base``; returns the seconds it took. podman caches the layers
    (by content, not by file times, so a fresh clone reuses them): with pyproject.toml unchanged, a change to the
    source rebuilds only the project's own small layers. The build stages are tagged too, so that the previous
    build's images can be removed without losing the cache (podman rmi takes their untagged parents along)."""
    volumes = ["--volume", f"{_wheelhouse()}:/mnt"]  # the Dockerfile's WHEELHOUSE
    if bundle := _ca_bundle():
        volumes += ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    tags = {None: tag, **{stage: f"{tag.rsplit(':', 1)[0]}-build:{stage}" for stage in ("app", "deps")}}
    previous = {name: _image_id(name) for name in tags.values()}
    started = time.monotonic()
    with log_path.open("w") as log:
        for stage, name in tags.items():  # the image first: the stages' builds are then all cached (seconds)
            target = ["--target", stage] if stage else []
            command = [*PODMAN, "build", "--format", "docker", "--layers", "--pull=never", "--network", "host",
                       *LIMITS, *volumes, "--build-arg", f"BASE_IMAGE={base}", *target, "--tag", name,
                       "--file", str(context / "Dockerfile"), str(context)]
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=max(60.0, timeout - (time.monotonic() - started)))
            if done.returncode != 0:
                raise RuntimeError(f"podman build exited {done.returncode}:\n{log_path.read_text()[-6000:]}")
            if not stage:
                took = time.monotonic() - started
    for name, old in previous.items():
        if old and old != _image_id(name):
            podman("rmi", old, check=False)
    return took


def _image_id(name: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", name, check=False).stdout.strip()


def run_in_image(*command: str, image: str = IMAGE, user: str | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A one-off shell command in the image (sh instead of the entry point): read-only, no tmpfs, no network, as the
    image's own user unless ``user`` says otherwise."""
    as_user = ["--user", user] if user else []
    return podman("run", "--rm", "--read-only", "--read-only-tmpfs=false", "--network", "none", *as_user, *LIMITS,
                  "--entrypoint", "sh", image, "-c", " ".join(command), timeout=timeout, check=False)


@dataclass
class Container:
    """One `podman run` of the image, attached (its output goes to a log file), stopped by name."""

    port: int
    env: dict[str, str]
    log_path: Path
    image: str = IMAGE
    user: str = str(USER_ID)
    name: str = field(default_factory=lambda: f"fhir-scribe-test-{uuid.uuid4().hex[:12]}")
    process: subprocess.Popen[bytes] | None = None
    seconds_to_ready: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 120) -> "Container":
        settings = {**self.env, "SCRIBE_SERVER__PORT": str(self.port)}
        command = [*PODMAN, "run", "--name", self.name, "--read-only", "--read-only-tmpfs=false", "--user", self.user,
                   "--network", "host", *LIMITS, *(arg for k, v in settings.items() for arg in ("--env", f"{k}={v}")),
                   self.image]
        log = self.log_path.open("wb")
        started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = started + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the container exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    self.seconds_to_ready = time.monotonic() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.remove()
        raise RuntimeError(f"the container did not answer /readyz within {ready_timeout_s:g} s:\n{self.log()}")

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, timeout=timeout, check=False)

    def stop(self, timeout_s: int = 10) -> float:
        """`podman stop` (SIGTERM, then SIGKILL after ``timeout_s``); returns how long it took."""
        started = time.monotonic()
        podman("stop", "--time", str(timeout_s), self.name, timeout=timeout_s + 60, check=False)
        return time.monotonic() - started

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, timeout=120, check=False)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def require_podman() -> None:
    for tool in ("podman", "runc", "mmdebstrap"):
        assert shutil.which(tool), f"{tool} is required for tests/container (installed by make test: TEST_APT)"
