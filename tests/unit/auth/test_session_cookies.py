import secrets

import pytest

from service.auth.session import SealedCookies, decode_key
from service.config import ConfigError


def key() -> bytes:
    return decode_key(secrets.token_urlsafe(32))


def test_round_trip_and_purpose_binding():
    cookies = SealedCookies([key()])
    sealed = cookies.seal("session", {"patient": "p1"}, ttl_s=60)
    assert cookies.open("session", sealed)["patient"] == "p1"
    assert cookies.open("launch", sealed) is None  # sealed for another purpose
    assert "p1" not in sealed  # encrypted, not just signed


def test_tampering_expiry_and_garbage():
    cookies = SealedCookies([key()])
    sealed = cookies.seal("session", {"patient": "p1"}, ttl_s=60)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert cookies.open("session", flipped) is None
    assert cookies.open("session", cookies.seal("session", {}, ttl_s=-1)) is None
    assert cookies.open("session", "not base64 !") is None and cookies.open("session", None) is None


def test_rotation_old_key_opens_new_key_seals():
    old, new = key(), key()
    before = SealedCookies([old]).seal("session", {"patient": "p1"}, ttl_s=60)
    rotated = SealedCookies([new, old])
    assert rotated.open("session", before)["patient"] == "p1"
    after = rotated.seal("session", {"patient": "p2"}, ttl_s=60)
    assert SealedCookies([new]).open("session", after)["patient"] == "p2"
    assert SealedCookies([old]).open("session", after) is None
    assert SealedCookies([new]).open("session", before) is None  # a retired key's cookies stop working


@pytest.mark.parametrize("bad", ["", "short", "x" * 60])
def test_bad_keys_are_named(bad):
    with pytest.raises(ConfigError, match="SCRIBE_SMART_APP__SESSION_KEYS"):
        decode_key(bad)
