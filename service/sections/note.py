"""The structured note: LOINC-coded sections over the transcript text, findings with ConText flags, renderers.

Sections are contiguous character ranges of ``text``: joined in order they give back the whole text, so the
structure never drops a word the clinician said.
"""

from __future__ import annotations

import html
import re

from pydantic import BaseModel

from service.sections.commands import CommandEdit


class Section(BaseModel):
    category: str | None  # None: the text before the first heading
    code: str | None  # LOINC section code
    display: str | None  # LOINC display
    title: str | None  # the heading as spoken, e.g. "history of present illness"
    text: str  # the body, trimmed
    start: int  # [start, end) of the whole section (heading + body) in StructuredNote.text
    end: int
    body_start: int


class Finding(BaseModel):
    text: str
    label: str  # SYMPTOM | CONDITION | MEDICATION (config targets)
    start: int
    end: int
    section: str | None
    negated: bool = False
    historical: bool = False
    family: bool = False
    hypothetical: bool = False
    uncertain: bool = False


class StructuredNote(BaseModel):
    text: str  # the transcript after dictation commands; what the sections cover
    sections: list[Section]
    findings: list[Finding]
    dictation_commands: list[CommandEdit] = []

    def render_text(self) -> str:
        blocks = []
        for section in self.sections:
            if not section.text and section.category is None:
                continue
            heading = f"{_heading(section)}\n" if section.category else ""
            blocks.append(heading + section.text)
        return "\n\n".join(blocks) + "\n"

    def render_xhtml(self) -> str:
        """FHIR-narrative-safe XHTML (h3, p, br only; everything escaped)."""
        parts = ['<div xmlns="http://www.w3.org/1999/xhtml">']
        for section in self.sections:
            if section.category:
                parts.append(f"<h3>{html.escape(_heading(section))}</h3>")
            for paragraph in re.split(r"\n\s*\n", section.text):
                if paragraph.strip():
                    lines = [html.escape(line.strip()) for line in paragraph.strip().split("\n")]
                    parts.append(f"<p>{'<br/>'.join(lines)}</p>")
        parts.append("</div>")
        return "".join(parts)


def _heading(section: Section) -> str:
    title = section.title or section.category or ""
    return title[:1].upper() + title[1:]
