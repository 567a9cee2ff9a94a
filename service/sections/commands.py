"""Spoken dictation commands ("period", "new line", "next section") -> punctuation and layout.

A command word is only converted where it cannot be the clinician's own word: "last menstrual period",
"sigmoid colon" and "colon cancer" stay. Each conversion is reported so the review view can show it; nothing is
changed silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel

from service.sections.headings import any_heading_at_end
from service.sections.rules import Command, SectionRules


class CommandEdit(BaseModel):
    spoken: str  # the words as transcribed, e.g. "new paragraph"
    emitted: str  # what replaced them, e.g. "\n\n"
    at: int  # character offset in the structured note's text


@dataclass(frozen=True)
class _Compiled:
    command: Command
    pattern: re.Pattern[str]


class CommandApplier:
    def __init__(self, rules: SectionRules) -> None:
        self._enabled = rules.dictation_commands.enabled
        self._heading_at_end = any_heading_at_end(rules)
        self._commands = []
        for command in rules.dictation_commands.commands:
            words = "|".join(re.escape(s).replace("\\ ", r"\s+") for s in command.spoken)
            # The command, the comma/space Whisper tends to put before it, and its own trailing punctuation.
            self._commands.append(_Compiled(command, re.compile(
                rf"[ \t]*,?[ \t]*(?<![\w'-])(?P<word>{words})(?![\w'-])[.,]?", re.IGNORECASE)))

    def apply(self, text: str) -> tuple[str, list[CommandEdit]]:
        if not self._enabled:
            return text, []
        candidates = []
        for compiled in self._commands:
            for match in compiled.pattern.finditer(text):
                if self._is_command(text, match, compiled.command):
                    candidates.append((match.start("word"), match.start(), match.end(), compiled.command.emit,
                                       match.group("word")))
        candidates.sort()
        out: list[str] = []
        edits: list[CommandEdit] = []
        position = 0
        for word_start, start, end, emit, word in candidates:
            if word_start < position:  # overlapping candidates: the first one wins
                continue
            start = max(start, position)
            out.append(text[position:start])
            if emit.startswith("\n"):  # a line break leaves no trailing blanks behind it
                while out and not out[-1].strip(" \t"):
                    out.pop()
                if out:
                    out[-1] = out[-1].rstrip(" \t")
            at = sum(len(piece) for piece in out)
            out.append(emit)
            edits.append(CommandEdit(spoken=word, emitted=emit, at=at))
            position = end
            # Keep exactly one space after inline punctuation; layout commands swallow the following spaces.
            rest = text[position:]
            stripped = rest.lstrip(" \t")
            if emit.strip(" ") and not emit.startswith("\n") and stripped and not stripped.startswith("\n"):
                out.append(" ")
            position += len(rest) - len(stripped)
        out.append(text[position:])
        return "".join(out), edits

    def _is_command(self, text: str, match: re.Match[str], command: Command) -> bool:
        before = re.findall(r"[\w'-]+", text[: match.start("word")])
        after = re.findall(r"[\w'-]+", text[match.end("word"):])
        if before and before[-1].lower() in command.unless_after:
            return False
        # An "unless_before" word only protects the clinician's word if no punctuation separates them.
        between = text[match.end("word"):][:3]
        if after and after[0].lower() in command.unless_before and not re.match(r"\s*[.,;:]", between):
            return False
        if command.only_after_heading and not self._heading_at_end.search(text[: match.start("word")]):
            return False
        return True
