"""A Subscription note's clinical time comes from its recording (service/subscriptions/audio_source.py)."""

from datetime import datetime, timedelta, timezone

import pytest

from service.subscriptions.audio_source import recording_end

AUDIO = {"contentType": "audio/ogg", "data": "AAAA"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@pytest.mark.parametrize("resource, end", [
    ({"resourceType": "Media", "content": AUDIO,
      "createdPeriod": {"start": "2026-11-29T08:00:00Z", "end": "2026-11-29T08:05:00Z"}}, "2026-11-29T08:05:00+00:00"),
    ({"resourceType": "Media", "content": AUDIO, "createdDateTime": "2026-11-29T10:00:00+02:00"},
     "2026-11-29T08:00:40+00:00"),
    ({"resourceType": "DocumentReference", "content": [{"attachment": {**AUDIO, "creation": "2026-11-29T08:00:00Z"}}],
      "date": "2026-11-29T09:00:00Z"}, "2026-11-29T08:00:40+00:00"),  # the attachment's own time comes first
    ({"resourceType": "DocumentReference", "content": [{"attachment": AUDIO}], "date": "2026-11-29T09:00:00Z"},
     "2026-11-29T09:00:00+00:00"),  # made once the recording was: its end
])
def test_the_recordings_own_time(resource, end):
    assert recording_end(resource, 40.0) == utc(end)


@pytest.mark.parametrize("when", ["2026-11-29", "2026-11-29T08:00:00", "1999-12-31T23:00:00Z", "yesterday",
                                  pytest.param((datetime.now(timezone.utc) + timedelta(hours=2)).isoformat(),
                                               id="in-two-hours")])  # a fixed id: the same in every xdist worker
def test_no_usable_time_means_processing_time(when):
    """A date without a time, no time zone, before 2000, not a date, in the future: not a recording's time."""
    resource = {"resourceType": "DocumentReference", "content": [{"attachment": {**AUDIO, "creation": when}}]}
    assert recording_end(resource, 40.0) is None
