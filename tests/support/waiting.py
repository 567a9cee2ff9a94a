"""Waiting for something to happen, instead of sleeping a fixed time and hoping it has.

    wait_for(lambda: proxy.faults.seen, what="the refusal's AuditEvent at the proxy")      # returns what it got
    holds(lambda: not proxy.faults.seen, for_s=0.5, what="nothing reaches the FHIR server")

``wait_for`` polls until the condition gives a truthy value and returns it; the deadline is generous (a busy 2-core
machine may take many times longer than an idle one), so it only decides how long a broken run hangs, never whether
a working one passes. ``holds`` is for absence ("nothing more arrives"), which no event can announce: the condition
is checked all along the window and the first time it is false fails at once, naming what was expected. On a slow
machine a window can only end before something late arrives (a miss, never a false failure), so the windows are
kept as they were, not made longer.

``metric`` reads one sample of the service's Prometheus /metrics, for conditions such as "two jobs are running".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60.0


def wait_for(condition: Callable[[], T], *, timeout: float = DEFAULT_TIMEOUT_S, interval: float = 0.1,
             what: str) -> T:
    """The condition's first truthy value, polled every ``interval`` s; AssertionError naming ``what`` (and the
    last value seen, or the exception the condition last raised) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        failure: BaseException | None = None
        try:
            result = condition()
        except (AssertionError, httpx.TransportError) as raised:  # not yet (e.g. a server still starting)
            result, failure = None, raised  # type: ignore[assignment]
        if result:
            return result
        if time.monotonic() >= deadline:
            last = f"{type(failure).__name__}: {failure}" if failure is not None else repr(result)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last[:2000]})")
        time.sleep(interval)


def holds(condition: Callable[[], object], *, for_s: float, interval: float = 0.05, what: str,
          detail: Callable[[], object] | None = None) -> None:
    """The condition stays truthy for ``for_s`` s (checked every ``interval`` s, and once more at the end); the
    failure names ``what`` and shows ``detail()`` (e.g. the requests seen) if given."""
    deadline = time.monotonic() + for_s
    while True:
        result = condition()
        if not result:
            shown = detail() if detail is not None else result
            raise AssertionError(f"expected {what} for {for_s:g} s; it stopped holding: {shown!r}"[:4000])
        if time.monotonic() >= deadline:
            return
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')


def metric(base_url: str, name: str, **labels: str) -> float:
    """One sample of ``base_url``/metrics (0.0 when absent, as an untouched counter would read)."""
    response = httpx.get(base_url + "/metrics", timeout=10)
    response.raise_for_status()
    wanted = frozenset(labels.items())
    for line in response.text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name and \
                frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or "")) == wanted:
            return float(match["value"])
    return 0.0
