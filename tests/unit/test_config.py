import subprocess
import sys

import pytest

from service.config import DEFAULT_CONFIG_FILE, ConfigError, load_settings
from tests.conftest import REPO


def test_yaml_defaults_are_loaded(settings):
    assert settings.transcription.model == "tiny.en"
    assert settings.audio.max_upload_bytes == 100 * 1024 * 1024
    assert settings.audio.max_duration_s == 3600


def test_environment_overrides_yaml(monkeypatch):
    monkeypatch.setenv("SCRIBE_TRANSCRIPTION__BEAM_SIZE", "2")
    monkeypatch.setenv("SCRIBE_AUDIO__MAX_DURATION_S", "90")
    s = load_settings()
    assert (s.transcription.beam_size, s.audio.max_duration_s) == (2, 90)


@pytest.mark.parametrize("name, value, fragment", [
    ("SCRIBE_TRANSCRIPTION__BEAM_SIZE", "0", "SCRIBE_TRANSCRIPTION__BEAM_SIZE (transcription.beam_size)"),
    ("SCRIBE_SERVER__PORT", "http", "SCRIBE_SERVER__PORT (server.port)"),
    ("SCRIBE_TRANSCRIPTION__DEVICE", "tpu", "SCRIBE_TRANSCRIPTION__DEVICE"),
    ("SCRIBE_AUDIO__MIN_DURATION_S", "99999", "min_duration_s must be smaller"),
])
def test_invalid_setting_is_named(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert fragment in str(caught.value)


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRIBE_CONFIG_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="SCRIBE_CONFIG_FILE: no such file"):
        load_settings()


def test_unknown_yaml_key_is_rejected(monkeypatch, tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("transcription:\n  modle: base\n")
    monkeypatch.setenv("SCRIBE_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match=r"transcription\.modle"):
        load_settings()


def test_serve_refuses_to_start_on_bad_config():
    result = subprocess.run([sys.executable, "-m", "service", "serve"], cwd=REPO, capture_output=True, text=True,
                            env={"SCRIBE_TRANSCRIPTION__NUM_WORKERS": "zero", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2
    assert "SCRIBE_TRANSCRIPTION__NUM_WORKERS" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_missing_model_directory(tmp_path):
    result = subprocess.run([sys.executable, "-m", "service", "serve"], cwd=REPO, capture_output=True, text=True,
                            env={"SCRIBE_TRANSCRIPTION__MODEL": str(tmp_path / "large-v3"), "PATH": "/usr/bin:/bin"},
                            timeout=60)
    assert result.returncode == 2
    assert "SCRIBE_TRANSCRIPTION__MODEL" in result.stderr and "large-v3" in result.stderr


def test_yaml_defaults_equal_code_defaults(monkeypatch, tmp_path):
    """config/settings.yaml documents the defaults; an install without it must behave exactly the same."""
    from_yaml = load_settings()
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    monkeypatch.setenv("SCRIBE_CONFIG_FILE", str(empty))
    from_code = load_settings()
    assert from_yaml.model_dump() == from_code.model_dump()
    assert DEFAULT_CONFIG_FILE.read_text().count("\n") > 20  # the documented file is really there
