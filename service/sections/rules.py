"""The structuring rules, read from ``config/sections.yaml`` into typed objects (validated at start-up)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.config import ConfigError

_LOINC = re.compile(r"^\d{1,7}-\d$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SectionDef(_Strict):
    code: str
    display: str
    headings: list[str] = Field(min_length=1)
    not_after: list[str] = []
    not_before: list[str] = []

    @field_validator("code")
    @classmethod
    def _loinc(cls, value: str) -> str:
        if not _LOINC.match(value):
            raise ValueError(f"'{value}' is not a LOINC code")
        return value

    @field_validator("headings")
    @classmethod
    def _regexes(cls, values: list[str]) -> list[str]:
        for value in values:
            re.compile(value)
        return values


class Command(_Strict):
    spoken: list[str] = Field(min_length=1)
    emit: str
    only_after_heading: bool = False
    unless_after: list[str] = []
    unless_before: list[str] = []


class DictationCommands(_Strict):
    enabled: bool = True
    commands: list[Command] = []


class ContextRuleDef(_Strict):
    literal: str
    category: str
    direction: Literal["FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"] = "BIDIRECTIONAL"
    pattern: str | None = None


Flag = Literal["negated", "historical", "family", "hypothetical", "uncertain"]


class ContextDef(_Strict):
    use_default_rules: bool = True
    drop_default_rules: list[str] = []  # literals of medspaCy default rules that misfire on speech
    rules: list[ContextRuleDef] = []
    terminating_types: dict[str, list[str]] = {}  # category -> categories that end its scope
    section_flags: dict[str, list[Flag]] = {}


class SectionRules(_Strict):
    not_after: list[str] = []
    not_before: list[str] = []
    sections: dict[str, SectionDef]
    dictation_commands: DictationCommands = DictationCommands()
    context: ContextDef = ContextDef()
    targets: dict[str, list[str]] = {}


def load_rules(path: Path) -> SectionRules:
    try:
        raw = yaml.safe_load(path.read_text())
        rules = SectionRules.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"SCRIBE_SECTIONS__RULES_FILE: cannot read {path}: {exc}") from None
    except (ValidationError, re.error) as exc:
        raise ConfigError(f"SCRIBE_SECTIONS__RULES_FILE: {path} is invalid: {exc}") from None
    unknown = set(rules.context.section_flags) - set(rules.sections)
    if unknown:
        raise ConfigError(f"SCRIBE_SECTIONS__RULES_FILE: section_flags name unknown sections: {sorted(unknown)}")
    return rules
