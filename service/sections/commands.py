"""Spoken dictation commands ("period", "new line", "next section") -> punctuation and layout.

A command word is only converted where it cannot be the clinician's own word: "last menstrual period",
"sigmoid colon" and "colon cancer" stay. Each conversion is reported so the review view can show it; nothing is
changed silently.

Linear in the text: each candidate looks only at its neighbourhood (the word before it, the word after it, whether
a heading ends right before it), never at the whole text before or after it. A 200,000-character text of nothing
but command words is handled in well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel

from service.sections.headings import any_heading_at_end
from service.sections.rules import Command, SectionRules

_WORD = re.compile(r"[\w'-]+")
# The last word of text[pos:endpos] (searched with pos/endpos, so the lookbehind still sees text[pos - 1]: a word
# cut by the window's start does not match and the window grows).
_LAST_WORD = re.compile(r"(?<![\w'-])([\w'-]+)[^\w'-]*\Z")
_BLANKS = re.compile(r"[ \t]*")
_WORD_WINDOW = 64  # characters looked at before a candidate for its previous word; doubled until one is found
# At most this many characters are looked at before the blanks/comma that precede a spoken "colon", for a heading
# ending there: the widest heading the rules can match (33 characters today), measured at start-up, up to this cap.
HEADING_WINDOW = 300


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
        self._heading_window = _widest_heading(rules)
        self._commands = []
        for command in rules.dictation_commands.commands:
            words = "|".join(re.escape(s).replace("\\ ", r"\s+") for s in command.spoken)
            # The command and its own trailing punctuation. The comma/space Whisper tends to put before it (blanks,
            # at most one comma, blanks) is found by looking back from the word: as a leading `[ \t]*,?[ \t]*` in
            # the regex it backtracked catastrophically over a run of blanks (2,000 spaces: 37 s).
            self._commands.append(_Compiled(command, re.compile(
                rf"(?<![\w'-])(?P<word>{words})(?![\w'-])[.,]?", re.IGNORECASE)))

    def apply(self, text: str) -> tuple[str, list[CommandEdit]]:
        if not self._enabled:
            return text, []
        candidates = []
        for compiled in self._commands:
            previous_end = 0  # matches of one pattern do not overlap: the lead-in starts after the previous one
            for match in compiled.pattern.finditer(text):
                word_start = match.start("word")
                if self._is_command(text, word_start, match.end("word"), compiled.command):
                    candidates.append((word_start, _lead_in(text, word_start, previous_end), match.end(),
                                       compiled.command.emit, match.group("word")))
                previous_end = match.end()
        candidates.sort()
        out: list[str] = []
        length = 0  # of "".join(out), kept as it goes
        edits: list[CommandEdit] = []
        position = 0
        for word_start, start, end, emit, word in candidates:
            if word_start < position:  # overlapping candidates: the first one wins
                continue
            start = max(start, position)
            out.append(text[position:start])
            length += start - position
            if emit.startswith("\n"):  # a line break leaves no trailing blanks behind it
                while out and not out[-1].strip(" \t"):
                    length -= len(out.pop())
                if out:
                    trimmed = out[-1].rstrip(" \t")
                    length -= len(out[-1]) - len(trimmed)
                    out[-1] = trimmed
            out.append(emit)
            edits.append(CommandEdit(spoken=word, emitted=emit, at=length))
            length += len(emit)
            # Keep exactly one space after inline punctuation; layout commands swallow the following spaces.
            position = _BLANKS.match(text, end).end()
            if emit.strip(" ") and not emit.startswith("\n") and position < len(text) and text[position] != "\n":
                out.append(" ")
                length += 1
        out.append(text[position:])
        return "".join(out), edits

    def _is_command(self, text: str, word_start: int, word_end: int, command: Command) -> bool:
        if command.unless_after:
            before = _previous_word(text, word_start)
            if before is not None and before.lower() in command.unless_after:
                return False
        # An "unless_before" word only protects the clinician's word if no punctuation separates them.
        if command.unless_before:
            after = _WORD.search(text, word_end)
            if (after is not None and after.group().lower() in command.unless_before
                    and not re.match(r"\s*[.,;:]", text[word_end:word_end + 3])):
                return False
        if command.only_after_heading and not self._heading_ends_at(text, word_start):
            return False
        return True

    def _heading_ends_at(self, text: str, position: int) -> bool:
        """``any_heading_at_end`` on ``text[:position]``, looking only at the last few hundred characters.

        The pattern is a heading, then ``\\s*,?\\s*`` to the end. Searched with pos/endpos, ``$`` matches at
        ``position`` (and before a newline right before it) exactly as at the end of the slice, and the lookbehind
        before the heading sees the real text. Any match ends its heading at or after the start of the trailing
        blanks/comma run, so starting the widest heading's length before that run finds it.
        """
        run = position
        while run > 0 and text[run - 1].isspace():  # str.isspace is the re module's \s for str patterns
            run -= 1
        if run > 0 and text[run - 1] == ",":
            run -= 1
            while run > 0 and text[run - 1].isspace():
                run -= 1
        return self._heading_at_end.search(text, max(0, run - self._heading_window), position) is not None


def _widest_heading(rules: SectionRules) -> int:
    """How many characters a heading can match at most (by CPython's own regex parser), capped at HEADING_WINDOW."""
    phrases = "|".join(f"(?:{h})" for s in rules.sections.values() for h in s.headings)
    try:
        from re import _parser  # private, but pinned: requires-python is 3.11

        widest = _parser.parse(phrases, re.IGNORECASE).getwidth()[1]
    except Exception:  # pragma: no cover - another interpreter: the cap is safe, only slower
        return HEADING_WINDOW
    return min(widest, HEADING_WINDOW)


def _previous_word(text: str, position: int) -> str | None:
    """The last ``[\\w'-]+`` word of ``text[:position]``, found in a window that grows until it holds a whole word."""
    window = _WORD_WINDOW
    while True:
        start = max(0, position - window)
        match = _LAST_WORD.search(text, start, position)
        if match is not None:
            return match.group(1)
        if start == 0:
            return None
        window *= 2


def _lead_in(text: str, word_start: int, floor: int) -> int:
    """Where the blanks, at most one comma, and blanks right before a command word start (not before ``floor``)."""
    start = word_start
    while start > floor and text[start - 1] in " \t":
        start -= 1
    if start > floor and text[start - 1] == ",":
        start -= 1
        while start > floor and text[start - 1] in " \t":
            start -= 1
    return start
