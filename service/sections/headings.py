"""Section headings as regular expressions that work on spoken text.

Whisper writes "history of present illness. The patient…", "medications, lisinopril…" or, without
punctuation, "…nausea past medical history high blood pressure…". A heading is recognised by its words; it is
rejected when a guard word sits right before it ("no family history", "drug allergies") or, when no punctuation
follows it, right after it ("plan to", "exam was limited"). Guards are lookarounds, so each rule stays one regex
a medspaCy ``SectionRule`` can run.
"""

from __future__ import annotations

import re

from service.sections.rules import SectionDef, SectionRules

# Punctuation that may close a spoken heading ("Plan:", "Allergies,", "HPI.").
_CLOSER = r"(?:\s?[:.,;\-])"


def heading_pattern(section: SectionDef, rules: SectionRules) -> str:
    not_after = sorted({*rules.not_after, *section.not_after}, key=len, reverse=True)
    not_before = sorted({*rules.not_before, *section.not_before}, key=len, reverse=True)
    # One fixed-width lookbehind per guard word (Python's re needs fixed width), each anchored on a word start.
    guards_before = "".join(f"(?<!\\b{re.escape(w)} )" for w in not_after)
    guard_after = f"(?!\\s+(?:{'|'.join(re.escape(w) for w in not_before)})\\b)" if not_before else ""
    phrases = "|".join(f"(?:{h})" for h in section.headings)
    # The lookahead first: the guards are only evaluated where a heading's words actually start.
    return f"(?<![\\w'&/-])(?=(?:{phrases}))(?:{guards_before})(?:{phrases})(?![\\w'&/-])(?:{_CLOSER}|{guard_after})"


def any_heading_at_end(rules: SectionRules) -> re.Pattern[str]:
    """Matches text that ends with a heading (optionally followed by a comma): where a spoken 'colon' belongs."""
    phrases = "|".join(f"(?:{h})" for s in rules.sections.values() for h in s.headings)
    return re.compile(f"(?<![\\w'-])(?:{phrases})\\s*,?\\s*$", re.IGNORECASE)
