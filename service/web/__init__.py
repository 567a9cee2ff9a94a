"""The SMART app's page: plain HTML, CSS and JavaScript, no build step, no CDN."""

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
