"""multipart/form-data read into memory, with the size limit enforced while the body streams in.

Starlette's own form parser spools any file part over 1 MiB to a temporary file: audio would touch the disk.
This reader keeps every part in memory and stops reading as soon as the audio exceeds the upload limit (413),
so an oversized upload costs neither disk nor more memory than the limit. File names sent by the client are
dropped on the floor: they often carry patient names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from python_multipart.exceptions import FormParserError
from starlette.requests import Request

from service.audio import AudioTooLarge
from service.errors import BadRequest, ScribeError

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32


class UnsupportedMediaType(ScribeError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


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


async def read_form(request: Request, *, max_file_bytes: int) -> Form:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send multipart/form-data with the audio in a part named 'file'")
    declared = request.headers.get("content-length")
    max_body = max_file_bytes + MAX_PARTS * MAX_FIELD_BYTES
    if declared and declared.isdigit() and int(declared) > max_body:
        raise AudioTooLarge(f"the request body is {int(declared) / 1048576:.1f} MiB; "
                            f"the audio limit is {max_file_bytes / 1048576:.1f} MiB")

    form = Form()
    parts: list[_Part] = []
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
        _, disposition = parse_options_header(header.get(b"content-disposition"))
        part = parts[-1]
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        part.is_file = b"filename" in disposition

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.size += end - start
        limit = max_file_bytes if part.is_file else MAX_FIELD_BYTES
        if part.size > limit:
            if part.is_file:
                raise AudioTooLarge(f"the upload exceeds the {max_file_bytes / 1048576:.1f} MiB limit")
            raise BadRequest(f"form field '{part.name}' exceeds {MAX_FIELD_BYTES} bytes")
        part.chunks.append(data[start:end])

    def on_part_end() -> None:
        part = parts[-1]
        body = b"".join(part.chunks)
        part.chunks = []
        if part.is_file:
            form.files[part.name] = body
        else:
            form.fields.setdefault(part.name, []).append(body.decode("utf-8", "replace"))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise BadRequest("the multipart/form-data body is malformed") from None
    return form
