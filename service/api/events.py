"""Server-sent event responses, configured once: keep-alive comments every 15 s so a proxy or load balancer
does not close a quiet stream while a long recording decodes (a segment can take longer than an idle timeout), no
caching, and LF line ends (the app's page splits events on blank lines): the event generators yield dicts and
leave the framing to this response. sse-starlette watches for the client leaving and cancels the stream's
generator, which is what stops the engine (see TranscriptionPool.transcribe/stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse

KEEP_ALIVE_S = 15


def event_stream(events: AsyncIterator[Any]) -> EventSourceResponse:
    return EventSourceResponse(events, ping=KEEP_ALIVE_S, sep="\n", headers={"Cache-Control": "no-store"})
