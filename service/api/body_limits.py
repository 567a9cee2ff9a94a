"""Request bodies capped per kind of route and refused with 413 as they arrive, before anything parses them.

- multipart upload routes: ``audio.max_upload_bytes`` + the form fields' allowance (``FORM_FIELDS_BYTES``);
- JSON routes (a draft to commit, text to section): ``server.max_json_bytes``;
- the Subscription endpoint (a notification may carry the recording, base64): ``notify_cap(settings)``;
- every other route: ``server.max_other_body_bytes``.

A declared Content-Length over the cap is refused at once, without reading a byte (a client that sent
``Expect: 100-continue`` never sends the body). A chunked body is counted as the route reads it: the read that
crosses the cap raises a ScribeError, which the problem handlers render (problem+json, or an OperationOutcome on
the Subscription endpoint) because it is raised inside the route. Routes of the last kind mostly take no body and
would never read one: their body (at most ``max_other_body_bytes``) is read here first, and replayed.
WebSocket and lifespan scopes pass through untouched.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.bodies import BodyTooLarge, mib
from service.api.multipart import FORM_FIELDS_BYTES
from service.api.problems import error_response
from service.audio import AudioTooLarge
from service.config import Settings
from service.errors import ScribeError
from service.logs import event

log = logging.getLogger(__name__)

UPLOAD_PATHS = frozenset({"/v1/dictations", "/v1/dictations/draft", "/v1/audio/transcriptions"})
JSON_PATHS = frozenset({"/v1/dictations/commit", "/v1/sections"})


def notify_cap(settings: Settings) -> int:
    """A full-resource notification may carry the audio, base64-encoded (4/3), plus the resource around it."""
    return settings.audio.max_upload_bytes * 4 // 3 + 1_048_576


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.notify_path = settings.subscriptions.path.rstrip("/")

    def cap(self, path: str) -> tuple[int, type[ScribeError], str, bool]:
        """(limit, error to raise, the limit as the client is told it, whether the route reads its own body)."""
        if path in UPLOAD_PATHS:
            audio = self.settings.audio.max_upload_bytes
            return audio + FORM_FIELDS_BYTES, AudioTooLarge, f"the audio limit is {_size(audio)}", True
        if path in JSON_PATHS:
            limit = self.settings.server.max_json_bytes
            return limit, BodyTooLarge, f"the limit is {_size(limit)}", True
        if path == self.notify_path or path.startswith(self.notify_path + "/"):
            limit = notify_cap(self.settings)
            return limit, BodyTooLarge, f"the limit is {_size(limit)}", True
        limit = self.settings.server.max_other_body_bytes
        return limit, BodyTooLarge, f"the limit for this route is {_size(limit)}", False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, error, stated, reads_body = self.cap(_route_path(scope))
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, error(f"the request body is {_size(declared)}; {stated}"))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise error(f"the request body exceeds {_size(limit)}; {stated}")
            return message

        if reads_body:
            await self.app(scope, counted, send)
            return
        # A route that takes no body would leave a streamed one unread: read it (capped) here, then replay it.
        buffered: list[Message] = []
        try:
            while True:
                message = await counted()
                buffered.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except ScribeError as refused:
            await self._refuse(scope, receive, send, refused)
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: ScribeError) -> None:
        event(log, "request.problem", status=exc.status, problem=exc.slug)
        response = error_response(_route_path(scope), self.notify_path, exc.status, exc.slug, exc.title, exc.detail,
                                  exc.headers)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the routes see: without the root path the server may be mounted under (uvicorn --root-path)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _size(size: int) -> str:
    return mib(size) if size >= 1048576 else f"{size / 1024:.1f} KiB"


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None
