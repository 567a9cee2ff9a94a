"""multipart/form-data read into memory, with the size limit enforced while the body streams in.

Starlette's own form parser spools any file part over 1 MiB to a temporary file: audio would touch the disk.
This reader keeps every part in memory and stops reading as soon as the audio exceeds the upload limit (413),
so an oversized upload costs neither disk nor more memory than the limit. The limit is per request: the audio
plus ``FORM_FIELDS_BYTES`` for every other part and the framing together, and the one file part accepted is the
one named ``file`` (any other file part is refused when its headers arrive, before a byte of it is kept). File
names sent by the client are dropped on the floor: they often carry patient names.

Uploads are received under their own bounded gate (``UploadGate``: ``audio.max_concurrent_uploads`` at once, then
503), at a minimum average rate: after ``audio.upload_grace_s`` a client that has sent less than
``min_upload_bytes_per_s`` per second since (and one that sends nothing at all) is cut with 408. The gate lives
here rather than in the transcription pool because it guards the receiving, which is HTTP's business: the pool
admits decoding work and is taken only once the upload is in memory, so a slow sender never holds a
transcription slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from python_multipart.exceptions import FormParserError
from starlette.requests import ClientDisconnect, Request

from service.api.deps import get_uploads
from service.audio import AudioTooLarge
from service.config import AudioLimits
from service.errors import BadRequest, Overloaded, ScribeError, Unprocessable
from service.logs import event

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 64 * 1024
FORM_FIELDS_BYTES = 64 * 1024  # every part but the audio, and the multipart framing, together
MAX_PARTS = 32


class UnsupportedMediaType(ScribeError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class UploadTooSlow(ScribeError):
    status, slug, title = 408, "upload-too-slow", "Upload too slow"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})  # RFC 9110 s15.5.9: the server closes


class UploadGate:
    """At most ``capacity`` uploads being received at once (each holds up to the upload limit in memory); the
    next one is refused at once with 503 + Retry-After. Touched only from the event loop thread."""

    def __init__(self, capacity: int, retry_after_s: int) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.receiving = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.receiving >= self.capacity:
            event(log, "upload.rejected", level=logging.WARNING, receiving=self.receiving, capacity=self.capacity)
            raise Overloaded(f"all {self.capacity} upload slots are busy; retry later",
                             retry_after_s=self.retry_after_s, reason="upload_slots")
        self.receiving += 1
        try:
            yield
        finally:
            self.receiving -= 1


async def read_upload(request: Request, limits: AudioLimits) -> Form:
    """An upload form, received under an upload slot at the minimum rate."""
    with get_uploads(request).slot():
        return await read_form(request, max_file_bytes=limits.max_upload_bytes,
                               min_bytes_per_s=limits.min_upload_bytes_per_s, grace_s=limits.upload_grace_s)


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


@dataclass
class _Part:
    name: str = ""
    is_file: bool = False
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False


async def read_form(request: Request, *, max_file_bytes: int, min_bytes_per_s: int | None = None,
                    grace_s: float = 0.0) -> Form:
    """With ``min_bytes_per_s``: 408 once fewer than ``min_bytes_per_s * (elapsed - grace_s)`` bytes have come."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send multipart/form-data with the audio in a part named 'file'")
    declared = request.headers.get("content-length")
    max_body = max_file_bytes + FORM_FIELDS_BYTES
    if declared and declared.isdigit() and int(declared) > max_body:
        raise AudioTooLarge(f"the request body is {int(declared) / 1048576:.1f} MiB; "
                            f"the audio limit is {max_file_bytes / 1048576:.1f} MiB")

    form = Form()
    parts: list[_Part] = []
    field_bytes = 0
    file_seen = False
    header: dict[bytes, bytes] = {}
    current_field = b""

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} parts")
        parts.append(_Part())
        header.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal current_field
        current_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = current_field.lower()
        header[key] = header.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        nonlocal current_field
        current_field = b""

    def on_headers_finished() -> None:
        nonlocal file_seen
        _, disposition = parse_options_header(header.get(b"content-disposition"))
        part = parts[-1]
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        part.is_file = b"filename" in disposition
        if part.is_file and file_seen:
            raise Unprocessable("the form has more than one file part: send the audio as the only file part, "
                                "named 'file'")
        if part.is_file and part.name != "file":
            raise Unprocessable("the form has no 'file' part with the audio, but a file part named otherwise: send "
                                "the audio as the only file part, named 'file'")
        file_seen = file_seen or part.is_file  # a second file part is refused as soon as its headers arrive

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal field_bytes
        part = parts[-1]
        part.size += end - start
        limit = max_file_bytes if part.is_file else MAX_FIELD_BYTES
        if part.size > limit:
            if part.is_file:
                raise AudioTooLarge(f"the upload exceeds the {max_file_bytes / 1048576:.1f} MiB limit")
            raise BadRequest(f"form field '{part.name}' exceeds {MAX_FIELD_BYTES} bytes")
        if not part.is_file:
            field_bytes += end - start
            if field_bytes > FORM_FIELDS_BYTES:
                raise BadRequest(f"the form fields exceed {FORM_FIELDS_BYTES} bytes together")
        part.chunks.append(data[start:end])

    def on_part_end() -> None:
        part = parts[-1]
        part.complete = True
        if part.is_file:
            return  # joined once the whole form has been read: a refused request never holds the audio twice
        body = b"".join(part.chunks)
        part.chunks = []
        form.fields.setdefault(part.name, []).append(body.decode("utf-8", "replace"))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    try:
        while True:
            # Behind once received < rate * (elapsed - grace), i.e. from started + grace + received / rate on:
            # each chunk is awaited until then only, so a client that sends nothing at all is cut as well.
            deadline = started + grace_s + received / min_bytes_per_s if min_bytes_per_s else None
            try:
                async with asyncio.timeout_at(deadline):
                    message = await request.receive()
            except TimeoutError:
                raise UploadTooSlow(f"{received} bytes in {loop.time() - started:.0f} s: after {grace_s:g} s an "
                                    f"upload must average at least {min_bytes_per_s} bytes/s") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > max_body:
                raise AudioTooLarge(f"the request body exceeds {max_body / 1048576:.1f} MiB: the audio limit is "
                                    f"{max_file_bytes / 1048576:.1f} MiB")
            if chunk:
                parser.write(chunk)
            if not message.get("more_body", False):
                break
        parser.finalize()
    except FormParserError:
        raise BadRequest("the multipart/form-data body is malformed") from None
    for part in parts:
        if part.is_file and part.complete:
            form.files[part.name] = b"".join(part.chunks)
            part.chunks = []
    return form
