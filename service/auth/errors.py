"""RFC 6750 refusals: 401 with WWW-Authenticate for a missing or bad token, 403 for a token that does not cover
the request."""

from __future__ import annotations

from service.errors import ScribeError


class InvalidToken(ScribeError):
    """401: no usable token. ``error`` is the RFC 6750 code (absent when no credentials were sent at all)."""

    status, slug, title = 401, "invalid-token", "Invalid or missing access token"

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        challenge = 'Bearer realm="fhir-scribe"'
        if error:
            challenge += f', error="{error}", error_description="{detail}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(ScribeError):
    """403: a valid token that does not cover this request (scope, patient or encounter)."""

    status, slug, title = 403, "insufficient-scope", "Not allowed by the access token"

    def __init__(self, detail: str, *, scope: str | None = None) -> None:
        challenge = f'Bearer realm="fhir-scribe", error="insufficient_scope", error_description="{detail}"'
        if scope:
            challenge += f', scope="{scope}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
