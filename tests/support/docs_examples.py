"""The code examples, links and names in README.md and docs/*.md, read the way tests/integration/test_docs.py
checks them.

A fenced block is run when its language is bash, sh, console or python. Two HTML comments, on the lines right
above the fence (any order, one per line), say more about it and stay invisible on a rendered page:

    <!-- not-run: <why this example cannot run against the demo> -->
    <!-- expect: <a regular expression its standard output must match> -->
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL, PYTHON = ("bash", "sh", "console"), ("python",)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_NOTE = re.compile(r"^\s*<!--\s*(?P<key>not-run|expect)\s*:(?P<value>.*?)-->\s*$")
_ANY_NOTE = re.compile(r"<!--\s*(not-run|expect)\b")


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason given in <!-- not-run: ... -->, "" when the reason is missing
    expect: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in SHELL + PYTHON and self.not_run is None


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        info = opening["info"].strip()
        lang = info.split()[0].lower() if info else ""
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        not_run: str | None = None
        expect: list[str] = []
        k = i - 1
        while k >= 0 and (note := _NOTE.match(lines[k])):
            if note["key"] == "not-run":
                not_run = note["value"].strip()
            else:
                expect.append(note["value"].strip())
            k -= 1
        code = "\n".join(body) + "\n"
        if lang == "console":
            code = _commands(body)
        found.append(Block(path, i + 1, lang, code, not_run, tuple(reversed(expect))))
        i = j + 1
    return found


def _commands(lines: list[str]) -> str:
    """A console transcript's commands: lines after a `$ ` prompt, and the lines continuing them (trailing \\)."""
    commands: list[str] = []
    continuing = False
    for line in lines:
        if line.startswith("$ "):
            commands.append(line[2:])
        elif continuing:
            commands.append(line)
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def stray_notes(path: Path) -> list[int]:
    """Lines with a not-run / expect comment that is not part of the comment run right above a fence (a typo
    there would silently run, or silently skip checking, the block below it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    stray = []
    for number, line in enumerate(lines):
        if not _ANY_NOTE.search(re.sub(r"`[^`]*`", "", line)):  # named in a code span: documentation, not a note
            continue
        k = number
        while k < len(lines) and _NOTE.match(lines[k]):
            k += 1
        if not _NOTE.match(line) or k >= len(lines) or not _FENCE.match(lines[k]):
            stray.append(number + 1)
    return stray


def prose(path: Path) -> str:
    """The document without its fenced blocks and inline code spans (where links are not links)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.DOTALL)


_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s|$)", re.MULTILINE)


def links(path: Path) -> list[str]:
    text = prose(path)
    return [m["target"] for pattern in (_LINK, _IMAGE, _REFERENCE) for m in pattern.finditer(text)]


def anchors(path: Path) -> set[str]:
    """The fragment ids GitHub gives the document's headings."""
    seen: dict[str, int] = {}
    ids = set()
    text = re.sub(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", "", path.read_text(encoding="utf-8"),
                  flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", text, flags=re.MULTILINE):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


# Paths into the repository, as the docs name them: service/..., tests/..., and the other top-level folders. A
# path followed by a placeholder (<...>, {...}, *) is a pattern, not a path.
_PATH = re.compile(r"(?<![\w./\-@:])(?P<path>(?:service|tests|config|bench|deploy|docs|fhir_profiles)/[\w.\-/]*)"
                   r"(?P<after>.?)")
_MODULE = re.compile(r"(?<![\w./\-])(?P<module>service(?:\.[a-z_][a-z0-9_]*)+)(?![\w(/-])")
# Package data installed under other names (pyproject.toml [tool.setuptools.package-dir]).
PACKAGE_DATA = {"service.defaults": "config", "service.profiles": "fhir_profiles"}


def repository_paths(path: Path) -> list[str]:
    """Every path in code (fenced blocks, `spans`); in running text, those that look like one: a file with an
    extension, or a folder with its trailing slash ("service/raw", a ratio, is not one)."""
    found = []
    text = path.read_text(encoding="utf-8")
    running = prose(path)
    code = "\n".join(m.group(0) for m in _CODE.finditer(text))
    for source, strict in ((code, False), (running, True)):
        for match in _PATH.finditer(source):
            name = match["path"]
            if match["after"] in ("<", "{", "*"):
                continue
            if strict and not (name.endswith("/") or "." in name.rstrip(".").rsplit("/", 1)[-1]):
                continue
            found.append(name.rstrip(".").rstrip("/") or name)
    return found


_CODE = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$|(`+)(?!`).*?(?<!`)\2(?!`)", re.MULTILINE | re.DOTALL)


def module_names(path: Path) -> list[str]:
    return [m["module"].rstrip(".") for m in _MODULE.finditer(path.read_text(encoding="utf-8"))]


def module_exists(name: str) -> bool:
    parts = name.split(".")
    for data, folder in PACKAGE_DATA.items():
        if name == data or name.startswith(data + "."):
            return (REPO / folder).is_dir()
    # service.a.b may be a module, a package, or a name inside a module (service.api.deps.get_pool)
    for cut in range(len(parts), 1, -1):
        base = REPO.joinpath(*parts[:cut])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return cut >= len(parts) - 1
    return False


_ENV = re.compile(r"(?<![\w$])(?P<name>SCRIBE_[A-Z0-9_]*[A-Z0-9](?P<wild>__\*)?)")


def env_names(path: Path) -> list[tuple[str, bool]]:
    """(name, is_prefix) for every SCRIBE_* variable named; `SCRIBE_X__*` names a settings group."""
    return [(m["name"].removesuffix("__*"), bool(m["wild"]))
            for m in _ENV.finditer(path.read_text(encoding="utf-8"))]


def env_file(code: str) -> dict[str, str]:
    """NAME=value lines of an env file (``ini`` block): comments and blank lines skipped, one level of quotes
    removed, as a shell or a container runtime's --env-file would read them."""
    values = {}
    for line in code.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values
