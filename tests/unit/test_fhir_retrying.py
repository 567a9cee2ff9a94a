"""The retry policy of FHIR requests: the server's Retry-After first, within fhir.retry_after_max_s."""

import asyncio
import time
from email.utils import formatdate

import pytest

from service.config import load_settings
from service.errors import ScribeError
from service.fhir.retrying import passed_on, retry_after_s, retrying


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("7") == 7.0 and retry_after_s(" 0 ") == 0.0
    assert 9 <= retry_after_s(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert retry_after_s(formatdate(time.time() - 60, usegmt=True)) == 0.0  # a date past: now
    assert retry_after_s(None) is None and retry_after_s("soon") is None and retry_after_s("-3") is None
    assert passed_on(0.2) == {"Retry-After": "1"} and passed_on(119.2) == {"Retry-After": "120"}


class Busy(ScribeError):
    status = 503


def _attempts(settings, failures, worth_repeating=lambda _: True):
    """Run a block that fails with ``failures`` in turn; (attempts made, seconds slept between them)."""
    slept: list[float] = []
    made = 0

    async def run():
        nonlocal made
        policy = retrying(settings, worth_repeating)
        policy.sleep = _record(slept)  # tenacity's sleep hook: no real waiting in a unit test
        async for attempt in policy:
            with attempt:
                made += 1
                if made <= len(failures):
                    raise failures[made - 1]
        return made

    asyncio.run(run())
    return made, slept


def _record(slept):
    async def sleep(seconds):
        slept.append(seconds)
    return sleep


def test_the_servers_wait_comes_before_the_backoff():
    settings = load_settings().fhir.model_copy(update={"retries": 3, "backoff_s": 0.5, "retry_after_max_s": 10})
    made, slept = _attempts(settings, [Busy("x", headers={"Retry-After": "4"}), Busy("x"), Busy("x")])
    assert made == 4
    assert slept[0] == 4.0  # asked
    assert 0.5 <= slept[1] <= 1.5 and 1.0 <= slept[2] <= 3.0  # doubling, jittered, from the second attempt


def test_a_wait_longer_than_allowed_is_not_taken_and_the_failure_is_raised():
    settings = load_settings().fhir.model_copy(update={"retries": 3, "retry_after_max_s": 10})
    with pytest.raises(Busy) as caught:
        _attempts(settings, [Busy("x", headers={"Retry-After": "11"})] * 4)
    assert caught.value.headers == {"Retry-After": "11"}


def test_attempts_are_bounded_and_only_what_is_worth_repeating_is_repeated():
    settings = load_settings().fhir.model_copy(update={"retries": 2, "backoff_s": 0})
    with pytest.raises(Busy):
        _attempts(settings, [Busy("x")] * 5)
    made, _ = _attempts(settings, [Busy("x")] * 2)
    assert made == 3
    with pytest.raises(Busy):
        _attempts(settings, [Busy("x")], worth_repeating=lambda failure: False)
