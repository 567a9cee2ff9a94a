"""Serves the SMART app's page (service/web/static) under a strict Content-Security-Policy."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import FileResponse, Response

from service.api.deps import get_settings
from service.config import Settings
from service.errors import ScribeError
from service.web import STATIC

router = APIRouter(tags=["SMART app"], include_in_schema=False)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _headers(settings: Settings) -> dict[str, str]:
    """EHRs show SMART apps in an iframe: only the origins in smart_app.frame_ancestors may frame the page."""
    ancestors = " ".join(settings.smart_app.frame_ancestors)
    return {**_HEADERS, "Content-Security-Policy": f"{CSP}; frame-ancestors {ancestors}"}
_FILES = {"app.js": "text/javascript", "pcm-worklet.js": "text/javascript", "app.css": "text/css"}


class NoSuchFile(ScribeError):
    status, slug, title = 404, "not-found", "Not found"


@router.get("/app/")
async def page(settings: Settings = Depends(get_settings)) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_headers(settings))


@router.get("/app/static/{name}")
async def static(name: str, settings: Settings = Depends(get_settings)) -> Response:
    if name not in _FILES:  # a fixed list: no path from the request ever reaches the file system
        raise NoSuchFile("no such file")
    return FileResponse(STATIC / name, media_type=_FILES[name], headers=_headers(settings))
