"""The docs a newcomer reads run as written: every shell and Python example in README.md and docs/*.md is run
against the demo (`fhir-scribe demo`, what `make serve` starts), and every link, path, module and setting they name
exists.

Examples run from the repository root with SCRIBE_URL set to the demo's address and SCRIBE_FHIR__BASE_URL to its
FHIR server, which is what the examples fall back to without them (`make serve`: 127.0.0.1:8080 and :8081), so a
reader can paste them unchanged. A block that cannot run against the demo says why, right above its fence:
<!-- not-run: reason -->; `<!-- expect: regex -->` there names what its output must show
(tests/support/docs_examples.py).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from service import config as config_module
from service.config import ConfigError, Settings, load_settings
from service.demo import run as demo_run
from service.demo import wait_until_ready
from tests.conftest import free_port
from tests.support.docs_examples import (
    PYTHON, REPO, SHELL, Block, anchors, blocks, documents, env_file, env_names, links, module_exists, module_names,
    repository_paths, stray_notes)

DOCS = documents()
BLOCKS = [block for doc in DOCS for block in blocks(doc)]
RUNNABLE = [block for block in BLOCKS if block.runs]
MAX_NOT_RUN = 6
README_MAX_LINES = 200  # the front page stays short: everything else is in docs/, by reader
BLOCK_TIMEOUT_S = 300
# Named in the docs but not settings: the examples' target (the service to call), and the settings file itself.
NOT_SETTINGS = {"SCRIBE_URL": "the examples' target service", f"{config_module.ENV_PREFIX}CONFIG_FILE": "config.py"}
DEMO_PORT = inspect.signature(demo_run).parameters["port"].default
DEMO_FHIR_PORT = inspect.signature(demo_run).parameters["fhir_port"].default


@dataclass(frozen=True)
class Demo:
    url: str
    fhir_base: str
    log: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """`fhir-scribe demo` as `make serve` runs it (no SCRIBE_* settings from this process), on free ports."""
    port, fhir_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("docs") / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "service", "demo", "--port", str(port), "--fhir-port",
                                    str(fhir_port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}/readyz", "the demo", timeout_s=120)
        yield Demo(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{fhir_port}/fhir", log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_the_example_runs_as_written(block: Block, demo: Demo, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
    env.update(SCRIBE_URL=demo.url, SCRIBE_FHIR__BASE_URL=demo.fhir_base)
    if block.lang in SHELL:
        command = ["bash", "-c", "set -euo pipefail\n" + block.code]
    else:
        script = tmp_path / f"{block.path.stem}_{block.line}.py"
        script.write_text(block.code)
        command = [_python(), str(script)]
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"{block.id} ran longer than {BLOCK_TIMEOUT_S} s:\n{block.code}\nstdout:\n{timeout.stdout}")
    said = (f"{block.id} ({block.lang}):\n{block.code}\nexit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}\n--- demo log (end)\n{demo.log.read_text(errors='replace')[-2000:]}")
    assert result.returncode == 0, said
    for pattern in block.expect:
        assert re.search(pattern, result.stdout, re.MULTILINE), f"output does not match /{pattern}/\n{said}"


def test_blocks_that_do_not_run_say_why_and_are_few():
    skipped = [b for b in BLOCKS if b.not_run is not None]
    assert all(b.lang in SHELL + PYTHON for b in skipped), \
        [b.id for b in skipped if b.lang not in SHELL + PYTHON]  # config snippets are never run: no marker needed
    assert not [b.id for b in skipped if len(b.not_run or "") < 10], "a not-run block needs its reason"
    assert len(skipped) <= MAX_NOT_RUN, [f"{b.id}: {b.not_run}" for b in skipped]
    assert not [b.id for b in skipped if b.expect], "an expectation on a block that is not run checks nothing"
    assert {doc.name: stray_notes(doc) for doc in DOCS if stray_notes(doc)} == {}, \
        "not-run / expect comments must sit right above a fence"


def test_every_block_says_its_language():
    untagged = [b.id for b in BLOCKS if not b.lang]
    assert not untagged, f"tag every fence (sh, python, yaml, ini, json, text): {untagged}"


def test_yaml_blocks_parse_and_settings_in_them_are_valid():
    sections = set(Settings.model_fields)
    for block in (b for b in BLOCKS if b.lang in ("yaml", "yml")):
        try:
            data = yaml.safe_load(block.code)
        except yaml.YAMLError as exc:
            pytest.fail(f"{block.id}: not YAML: {exc}")
        if isinstance(data, dict) and data and set(data) <= sections:  # a settings file (or a part of one)
            Settings.model_validate(data)


def test_json_blocks_parse():
    for block in (b for b in BLOCKS if b.lang == "json"):
        try:
            json.loads(block.code)
        except ValueError as exc:
            pytest.fail(f"{block.id}: not JSON: {exc}")


def test_env_files_are_valid_configurations(monkeypatch: pytest.MonkeyPatch):
    for name in [k for k in os.environ if k.startswith(config_module.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for block in (b for b in BLOCKS if b.lang in ("ini", "env", "dotenv")):
        values = env_file(block.code)
        assert values and all(k.startswith(config_module.ENV_PREFIX) for k in values), block.id
        with monkeypatch.context() as env:
            for name, value in values.items():
                env.setenv(name, value)
            try:
                load_settings()
            except ConfigError as exc:
                pytest.fail(f"{block.id}: {exc}")


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The settings group a field holds (also when optional); None for a value (lists and dicts are JSON)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _setting(name: str) -> str:
    """'value' or 'group' for an environment variable the Settings read, '' for one they do not."""
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    if not name.startswith(prefix):
        return ""
    model: type[BaseModel] | None = Settings
    parts = name[len(prefix):].lower().split(delimiter)
    for i, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            return ""
        model = _model_in(model.model_fields[part].annotation)
    return "group" if model is not None else "value"


def test_every_scribe_variable_named_is_a_setting():
    assert config_module.ENV_PREFIX == "SCRIBE_" and "CONFIG_FILE" in Path(config_module.__file__).read_text()
    unknown = []
    for doc in DOCS:
        for name, is_group in env_names(doc):
            if name in NOT_SETTINGS:
                continue
            kind = _setting(name)
            if not kind or (is_group and kind != "group"):
                unknown.append(f"{doc.name}: {name}{'__*' if is_group else ''}")
    assert not unknown, f"not settings in service/config.py: {sorted(set(unknown))}"
    assert not _setting("SCRIBE_URL"), "SCRIBE_URL is the docs' example variable: it must not be a setting"


def test_examples_default_to_the_demo_addresses():
    """A reader without SCRIBE_URL set reaches `make serve`'s demo: the examples' defaults are its addresses."""
    service, fhir = f"http://127.0.0.1:{DEMO_PORT}", f"http://127.0.0.1:{DEMO_FHIR_PORT}/fhir"
    for block in RUNNABLE:
        for default in re.findall(r"\$\{SCRIBE_URL:-([^}]*)\}|environ\.get\(\s*\"SCRIBE_URL\",\s*\"([^\"]*)\"",
                                  block.code):
            assert service in default, f"{block.id}: SCRIBE_URL defaults to {default}, the demo is {service}"
        for default in re.findall(r"\$\{SCRIBE_FHIR__BASE_URL:-([^}]*)\}", block.code):
            assert default == fhir, f"{block.id}: SCRIBE_FHIR__BASE_URL defaults to {default}, the demo is {fhir}"
    assert Settings.model_fields["fhir"].default.base_url == fhir, "the CLI's default FHIR server is the demo's"


def test_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < README_MAX_LINES
    makefile = (REPO / "Makefile").read_text()
    setup = next(b for b in blocks(REPO / "README.md") if "make serve" in b.code)
    assert "make serve" in setup.code and "make test" in setup.code
    assert re.search(r"^serve:.*\n\t.*fhir-scribe demo$", makefile, re.MULTILINE), "make serve runs the demo"
    assert re.search(r"^test:.*\n\t.*-m pytest\b", makefile, re.MULTILINE), "make test runs the suite"
    for guide in ("clinicians.md", "integration.md", "operations.md", "contributing.md", "README.md"):
        assert f"docs/{guide}" in readme, f"README.md links docs/{guide}"


def test_relative_links_point_at_files_and_headings():
    broken = []
    for doc in DOCS:
        for target in links(doc):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, fragment = target.partition("#")
            linked = (doc.parent / file_part).resolve() if file_part else doc
            if not linked.exists():
                broken.append(f"{doc.name}: {target}")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{doc.name}: {target} (no such heading)")
            elif REPO not in linked.parents and linked != REPO:
                broken.append(f"{doc.name}: {target} (outside the repository)")
    assert not broken, broken


def test_paths_and_modules_named_exist():
    missing = []
    for doc in DOCS:
        missing += [f"{doc.name}: {p}" for p in repository_paths(doc) if not (REPO / p).exists()]
        missing += [f"{doc.name}: {m}" for m in module_names(doc) if not module_exists(m)]
    assert not missing, sorted(set(missing))


def test_the_layout_names_every_package():
    """docs/contributing.md's layout covers the code: every package and top-level module of service/."""
    layout = (REPO / "docs" / "contributing.md").read_text(encoding="utf-8")
    units = [f"service/{p.parent.name}/" for p in (REPO / "service").glob("*/__init__.py")]
    units += [f"service/{p.name}" for p in (REPO / "service").glob("*.py") if p.name != "__init__.py"]
    assert not [u for u in sorted(units) if u not in layout], "name these in docs/contributing.md's layout"
