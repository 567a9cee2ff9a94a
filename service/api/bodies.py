"""JSON request bodies read by the route itself, *after* authentication, never by FastAPI before it.

FastAPI reads and parses a pydantic body parameter before it runs the route's dependencies, so an unauthenticated
caller could make the process hold a body of any size before the 401. Routes that take JSON therefore declare no
body parameter: they depend on ``authenticated`` and then call ``read_json``, which reads at most ``max_bytes``
(the body-limit middleware refuses earlier still, from Content-Length or while the body streams in) and
validates with the model. Errors keep FastAPI's own shape (``RequestValidationError``: 422 ``invalid-request``,
fields named with a ``body.`` prefix, values never echoed). ``json_body`` keeps the model in the OpenAPI
document (``openapi_extra``), so the docs and schema-based fuzzers still see it.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from service.errors import ScribeError

M = TypeVar("M", bound=BaseModel)


class BodyTooLarge(ScribeError):
    status, slug, title = 413, "body-too-large", "Request body too large"


def mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


async def read_json(request: Request, model: type[M], max_bytes: int) -> M:
    """The body as ``model``; 422 ``invalid-request`` for bad JSON or fields, 413 over ``max_bytes``."""
    media_type, _ = parse_options_header(request.headers.get("content-type"))
    if media_type and media_type != b"application/json" and not media_type.endswith(b"+json"):
        _invalid("model_attributes_type", ("body",), "Input should be a JSON object (Content-Type: application/json)")
    body = bytearray()  # no copy per chunk
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(f"the request body exceeds the {mib(max_bytes)} limit")
    if not body:
        _invalid("missing", ("body",), "Field required")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        _invalid("json_invalid", ("body", exc.pos), "JSON decode error", ctx={"error": exc.msg})
    except ValueError:  # not UTF-8, or a number of more than 4300 digits
        _invalid("json_invalid", ("body",), "JSON decode error", ctx={"error": "not UTF-8 text, or a number too long"})
    except RecursionError:  # a deeply nested document
        _invalid("json_invalid", ("body",), "JSON decode error", ctx={"error": "nested too deeply"})
    del body
    _no_lone_surrogates(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"]), "input": None} for e in exc.errors()]) \
            from None


def _no_lone_surrogates(data: Any) -> None:
    """JSON may escape half a UTF-16 pair (\\ud800); such a string is no text and could not even be encoded back
    (a 500 when it is echoed in a note or an answer): refused here, with where it is."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), data)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, dict):
            stack.extend(((*loc, k), v) for k, v in node.items())
            keys = [k for k in node if not _encodable(k)]
            if keys:
                _invalid("string_unicode", loc, "Input should be a valid string: a key holds a lone surrogate")
        elif isinstance(node, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(node))
        elif isinstance(node, str) and not _encodable(node):
            _invalid("string_unicode", loc, "Input should be a valid string: it holds a lone surrogate")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _invalid(kind: str, loc: tuple[str | int, ...], msg: str, **extra: Any) -> NoReturn:
    raise RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None, **extra}])


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` with ``read_json``: the same requestBody FastAPI would
    have documented, with the schema inlined (the model need not appear anywhere else in the document)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inlined(model)}}}}


def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:  # a recursive model: cannot be inlined
                raise ValueError(f"{model.__name__}: recursive schema ({name}) cannot be inlined")
            rest = {k: resolve(v, seen) for k, v in node.items() if k != "$ref"}
            return {**resolve(defs[name], (*seen, name)), **rest}
        return {k: resolve(v, seen) for k, v in node.items()}

    return resolve(schema, ())
