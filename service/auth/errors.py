"""RFC 6750 refusals: 401 with WWW-Authenticate for a missing or bad token, 403 for a token that does not cover
the request."""

from __future__ import annotations

import re

from service.errors import ScribeError

# RFC 6750 s3: error_description is limited to %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash, ASCII only).
_NOT_IN_CHALLENGE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def _quoted(text: str) -> str:
    return _NOT_IN_CHALLENGE.sub("?", text)[:300]


class InvalidToken(ScribeError):
    """401: no usable token. ``error`` is the RFC 6750 code (absent when no credentials were sent at all)."""

    status, slug, title = 401, "invalid-token", "Invalid or missing access token"

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        challenge = 'Bearer realm="fhir-scribe"'
        if error:
            challenge += f', error="{error}", error_description="{_quoted(detail)}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class MalformedAuthorization(InvalidToken):
    """400 invalid_request (RFC 6750 s3.1): the request carries its credentials ambiguously, e.g. two
    Authorization headers; which one counts must not depend on a proxy's or framework's choice."""

    status, slug, title = 400, "invalid-request", "Malformed authorization"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, error="invalid_request")


class Forbidden(ScribeError):
    """403: a valid token that does not cover this request (scope, patient or encounter)."""

    status, slug, title = 403, "insufficient-scope", "Not allowed by the access token"

    def __init__(self, detail: str, *, scope: str | None = None) -> None:
        challenge = f'Bearer realm="fhir-scribe", error="insufficient_scope", error_description="{_quoted(detail)}"'
        if scope:
            challenge += f', scope="{scope}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
