"""Sealed cookies: the SMART app's whole session state lives in the browser, encrypted and authenticated.

AES-256-GCM with a key from settings; the first key seals, every listed key opens, so keys rotate without logging
anyone out. Each cookie is bound to its purpose (associated data) and carries its own expiry. Replicas share
nothing but the keys; nothing is stored server-side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.config import ConfigError


def decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError("SCRIBE_SMART_APP__SESSION_KEYS: each key must be 32 random bytes, base64url "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key


class SealedCookies:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigError("SCRIBE_SMART_APP__SESSION_KEYS: at least one key is needed")
        self._keys = {hashlib.sha256(k).digest()[:4]: AESGCM(k) for k in keys}
        self._current = hashlib.sha256(keys[0]).digest()[:4]

    def seal(self, purpose: str, data: dict[str, Any], ttl_s: float) -> str:
        nonce = os.urandom(12)
        payload = json.dumps({**data, "exp": time.time() + ttl_s}, separators=(",", ":")).encode()
        sealed = self._current + nonce + self._keys[self._current].encrypt(nonce, payload, purpose.encode())
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, purpose: str, token: str | None) -> dict[str, Any] | None:
        """The data, or None if the cookie is missing, tampered with, sealed for another purpose or expired."""
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            cipher = self._keys.get(raw[:4])
            if cipher is None:
                return None
            data = json.loads(cipher.decrypt(raw[4:16], raw[16:], purpose.encode()))
        except (binascii.Error, ValueError, InvalidTag):
            return None
        return data if data.get("exp", 0) > time.time() else None
