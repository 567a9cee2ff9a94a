"""An independent FHIR R4 validator for the tests: FHIR.js (npm "fhir") in one long-lived Node process.

Our own code builds resources with fhir.resources; checking them with the same library would only prove it agrees
with itself. This wrapper talks to tests/fhir_validator/validate.js over pipes, one JSON line per resource.

    from tests.support.fhir_validation import errors
    assert errors(document_reference) == []

Setup (once per checkout, and in CI): `npm ci --prefix tests/fhir_validator`.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent  # the parent of tests/
VALIDATOR_DIR = REPO / "tests" / "fhir_validator"
VALIDATE_JS = VALIDATOR_DIR / "validate.js"
INSTALL_HINT = "run `npm ci --prefix tests/fhir_validator` from the repository root"


class FhirJsValidator:
    """One `node tests/fhir_validator/validate.js` process; validate() sends one resource and reads one answer."""

    def __init__(self, *, timeout: float = 60.0, node: str | None = None, fhirjs_only: bool = False) -> None:
        if not (VALIDATOR_DIR / "node_modules" / "fhir" / "package.json").is_file():
            raise RuntimeError(f"FHIR validator not installed ({VALIDATOR_DIR / 'node_modules'} is missing): {INSTALL_HINT}")
        node = node or shutil.which("node")
        if node is None:
            raise RuntimeError(f"`node` is not on PATH; the FHIR validator needs Node.js >= 18 ({INSTALL_HINT})")
        self.timeout = timeout
        self._closed = False
        self._lock = threading.Lock()
        self._buffer = b""
        self._stderr = tempfile.TemporaryFile()
        args = [node, str(VALIDATE_JS)] + (["--fhirjs-only"] if fhirjs_only else [])
        self._proc = subprocess.Popen(
            args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)

    # -- protocol ---------------------------------------------------------------------------------------------

    def result(self, resource: dict[str, Any] | str) -> dict[str, Any]:
        """The full answer {"valid": bool, "messages": [...]} for one resource (a dict, or a raw JSON string)."""
        line = resource if isinstance(resource, str) else json.dumps(resource, ensure_ascii=False)
        if "\n" in line or "\r" in line:  # json.dumps never emits raw newlines; a raw string might
            line = json.dumps(json.loads(line), ensure_ascii=False)
        with self._lock:
            if self._closed:
                raise RuntimeError("FHIR validator used after close()")
            if self._proc.poll() is not None:
                self._fail("the validator process has exited")
            try:
                self._proc.stdin.write(line.encode("utf-8") + b"\n")
                self._proc.stdin.flush()
            except BrokenPipeError:
                self._fail("the validator process closed its input")
            return json.loads(self._read_line())

    def validate(self, resource: dict[str, Any] | str) -> list[dict[str, Any]]:
        """All messages: dicts with severity ("error" | "warning" | "information"), location, message (+ source,
        resourceId). An empty list means FHIR.js found nothing at all."""
        return self.result(resource)["messages"]

    def error_messages(self, resource: dict[str, Any] | str) -> list[dict[str, Any]]:
        """Only the messages of severity "error"."""
        return [m for m in self.validate(resource) if m["severity"] == "error"]

    def is_valid(self, resource: dict[str, Any] | str) -> bool:
        return bool(self.result(resource)["valid"])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        proc = self._proc
        if proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stdin):
            try:
                stream.close()
            except OSError:
                pass
        self._selector.close()
        self._stderr.close()

    def __enter__(self) -> FhirJsValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------------------

    def _read_line(self) -> bytes:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if not self._selector.select(timeout=self.timeout):
                self._proc.kill()
                self._proc.wait()
                self._fail(f"no answer within {self.timeout:g} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._proc.wait()
                self._fail("the validator process exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _fail(self, what: str) -> None:
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", "replace").strip()
        code = self._proc.poll()
        raise RuntimeError(
            f"FHIR validator failed: {what} (exit code {code}). stderr: {stderr or '(empty)'}. "
            f"If dependencies are missing, {INSTALL_HINT}."
        )


def format_message(m: dict[str, Any]) -> str:
    """"severity location: message", e.g. "error DocumentReference.status: Code "bogus" not found in value set"."""
    return f"{m['severity']} {m.get('location', '')}: {m['message']}"


_shared: FhirJsValidator | None = None
_shared_lock = threading.Lock()


def shared_validator() -> FhirJsValidator:
    """One validator process for the whole test session (started on first use, closed at interpreter exit)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed or _shared._proc.poll() is not None:
            _shared = FhirJsValidator()
            atexit.register(_shared.close)
        return _shared


def errors(resource: dict[str, Any] | str) -> list[str]:
    """The errors FHIR.js finds in `resource`, formatted "severity location: message"; [] when valid.

    Use as `assert errors(resource) == []` so that pytest prints every finding on failure.
    """
    return [format_message(m) for m in shared_validator().error_messages(resource)]


def messages(resource: dict[str, Any] | str) -> list[str]:
    """Every finding (errors, warnings, information), formatted like errors()."""
    return [format_message(m) for m in shared_validator().validate(resource)]
