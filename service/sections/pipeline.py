"""The medspaCy pipeline, built once: tokenizer -> sentencizer -> targets -> Sectionizer -> ConText.

spaCy's ``sentencizer`` replaces PyRuSH: same sections and findings here, 3-4x faster, and PyRuSH >= 1.0.11 logs
every document's full text at debug level (a PHI leak). The Sectionizer runs before ConText and makes each heading
its own sentence, so a negation cannot run across a section boundary in unpunctuated speech.

The medspaCy steps run through service/sections/engine.py: the same rules and results as medspaCy's components,
in time linear in the text (the components themselves are quadratic: 22 s for 200,000 characters).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from pathlib import Path

import medspacy
import spacy
from medspacy.context import ConTextRule
from medspacy.section_detection import SectionRule
from medspacy.target_matcher import TargetRule
from spacy.tokens import Doc

from service.sections.commands import CommandApplier
from service.sections.engine import (FoundSection, RuleMatcher, add_targets, apply_context, find_sections,
                                     register_context_extensions)
from service.sections.headings import heading_pattern
from service.sections.note import Finding, Section, StructuredNote
from service.sections.rules import SectionRules, load_rules

# medspaCy's English ConText rules, as shipped in its wheel.
DEFAULT_CONTEXT_RULES = Path(medspacy.__file__).resolve().parent.parent / "resources" / "en" / "context_rules.json"
_FLAG_ATTRS = {"negated": "is_negated", "historical": "is_historical", "family": "is_family",
               "hypothetical": "is_hypothetical", "uncertain": "is_uncertain"}
_TITLE_PUNCT = " \t\n:.,;-"


class Sectioner:
    def __init__(self, rules: SectionRules) -> None:
        self.rules = rules
        self._commands = CommandApplier(rules)
        nlp = spacy.blank("en")  # what medspacy.load() starts from; its components are driven by engine.py
        self._sentencizer = nlp.add_pipe("sentencizer")
        self._targets = RuleMatcher(
            nlp, [TargetRule(phrase, label) for label, phrases in rules.targets.items() for phrase in phrases])
        self._headings = RuleMatcher(nlp, [SectionRule(category, category, pattern=heading_pattern(section, rules))
                                           for category, section in rules.sections.items()])
        context_rules = _default_context_rules(rules) + [
            ConTextRule(r.literal, r.category, pattern=r.pattern, direction=r.direction) for r in rules.context.rules]
        # Set per rule: medspaCy 1.3.1's own `terminating_types` keeps one-shot iterators, so only the first rule
        # of each category would get them.
        for rule in context_rules:
            rule.terminated_by.update(t.upper() for t in rules.context.terminating_types.get(rule.category.upper(), []))
        self._context = RuleMatcher(nlp, context_rules)
        register_context_extensions()
        self._nlp = nlp

    @classmethod
    def from_file(cls, path: Path) -> "Sectioner":
        return cls(load_rules(path))

    def structure(self, transcript: str) -> StructuredNote:
        text, edits = self._commands.apply(transcript)
        doc = self._sentencizer(self._nlp.make_doc(text))
        add_targets(doc, self._targets)
        found = find_sections(doc, self._headings)
        apply_context(doc, self._context)
        sections = self._sections(doc, found)
        return StructuredNote(text=text, sections=sections, findings=self._findings(doc, sections),
                              dictation_commands=edits)

    def _sections(self, doc: Doc, sections: list[FoundSection]) -> list[Section]:
        text = doc.text
        found = [s for s in sections if s.category is not None or s.body_end > s.body_start]
        starts = [0 if s.category is None else doc[s.title_start].idx for s in found]
        result = []
        for i, (section, start) in enumerate(zip(found, starts)):
            end = starts[i + 1] if i + 1 < len(found) else len(text)
            body_start = start if section.category is None else _char(doc, section.body_start)
            definition = self.rules.sections.get(section.category) if section.category else None
            result.append(Section(
                category=section.category,
                code=definition.code if definition else None,
                display=definition.display if definition else None,
                title=re.sub(r"\s+", " ", text[start:body_start].strip(_TITLE_PUNCT)) or None,
                # Leading closers belong to the heading; a trailing comma only separated the next heading.
                text=text[body_start:end].lstrip(_TITLE_PUNCT).rstrip(" \t\n,;"),
                start=start, end=end, body_start=body_start,
            ))
        if result:
            result[0] = result[0].model_copy(update={"start": 0})  # leading whitespace belongs to the first
        return result

    def _findings(self, doc: Doc, sections: list[Section]) -> list[Finding]:
        findings = []
        starts = [s.start for s in sections]  # contiguous, in order: the one an entity is in, by bisection
        for ent in doc.ents:
            i = bisect_right(starts, ent.start_char) - 1
            section = sections[i] if i >= 0 and ent.start_char < sections[i].end else None
            category = section.category if section else None
            flags = {flag: bool(getattr(ent._, attr)) for flag, attr in _FLAG_ATTRS.items()}
            for flag in self.rules.context.section_flags.get(category or "", []):
                flags[flag] = True
            findings.append(Finding(text=ent.text, label=ent.label_, start=ent.start_char, end=ent.end_char,
                                    section=category, **flags))
        return findings


def _default_context_rules(rules: SectionRules) -> list[ConTextRule]:
    if not rules.context.use_default_rules:
        return []
    dropped = set(rules.context.drop_default_rules)
    return [r for r in ConTextRule.from_json(str(DEFAULT_CONTEXT_RULES)) if r.literal not in dropped]


def _char(doc: Doc, token_index: int) -> int:
    return doc[token_index].idx if token_index < len(doc) else len(doc.text)
