"""The EHR's look for the page: a SMART style document (App Launch 2, ``smart_style_url``) as CSS variables.

The page's CSP keeps its scripts on its own origin, so the service fetches the style on the page's behalf and
serves it as a same-origin stylesheet. The document comes from the EHR but is still input: only the known keys
pass, and each value must look like what it claims to be (a colour, a length, a font list), so nothing in it can
close the rule and restyle or hide the page.
"""

from __future__ import annotations

import re
from typing import Any

_COLOUR = re.compile(r"^(#[0-9a-fA-F]{3,8}|(rgb|rgba|hsl|hsla)\([0-9.,%\s]+\)|[a-zA-Z]{3,20})$")
_LENGTH = re.compile(r"^\d{1,3}(\.\d{1,3})?(px|em|rem|%)?$")
_FONTS = re.compile(r"^[A-Za-z0-9 ,'\"-]{1,200}$")

# SMART style key -> (the page's CSS variable, what its value must look like)
_KEYS = {
    "color_background": ("--bg", _COLOUR),
    "color_text": ("--fg", _COLOUR),
    "color_highlight": ("--accent", _COLOUR),
    "color_error": ("--error", _COLOUR),
    "dim_border_radius": ("--radius", _LENGTH),
    "dim_font_size": ("--font-size", _LENGTH),
    "font_family_body": ("--font-body", _FONTS),
    "font_family_heading": ("--font-heading", _FONTS),
}


def stylesheet(style: Any) -> str:
    """CSS overriding the page's defaults with the EHR's; empty for anything that is not a style document."""
    if not isinstance(style, dict):
        return ""
    declarations = [f"  {variable}: {value.strip()};" for key, (variable, pattern) in _KEYS.items()
                    if isinstance(value := style.get(key), str) and pattern.match(value.strip())]
    return ":root {\n" + "\n".join(declarations) + "\n}\n" if declarations else ""
