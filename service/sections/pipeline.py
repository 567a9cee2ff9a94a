"""The medspaCy pipeline, built once: tokenizer -> sentencizer -> targets -> Sectionizer -> ConText.

spaCy's ``sentencizer`` replaces PyRuSH: same sections and findings here, 3-4x faster, and PyRuSH >= 1.0.11 logs
every document's full text at debug level (a PHI leak). The Sectionizer runs before ConText and makes each heading
its own sentence, so a negation cannot run across a section boundary in unpunctuated speech.
"""

from __future__ import annotations

import re
from pathlib import Path

import medspacy
from medspacy.context import ConTextRule
from medspacy.section_detection import SectionRule
from medspacy.target_matcher import TargetRule
from spacy.tokens import Doc

from service.sections.commands import CommandApplier
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
        nlp = medspacy.load(medspacy_enable=["medspacy_target_matcher"])
        nlp.add_pipe("sentencizer", before="medspacy_target_matcher")
        nlp.get_pipe("medspacy_target_matcher").add(
            [TargetRule(phrase, label) for label, phrases in rules.targets.items() for phrase in phrases])
        sectionizer = nlp.add_pipe("medspacy_sectionizer", config={
            "rules": None, "apply_sentence_boundary": True, "span_attrs": None})
        sectionizer.add([SectionRule(category, category, pattern=heading_pattern(section, rules))
                         for category, section in rules.sections.items()])
        context_rules = _default_context_rules(rules) + [
            ConTextRule(r.literal, r.category, pattern=r.pattern, direction=r.direction) for r in rules.context.rules]
        # Set per rule: medspaCy 1.3.1's own `terminating_types` keeps one-shot iterators, so only the first rule
        # of each category would get them.
        for rule in context_rules:
            rule.terminated_by.update(t.upper() for t in rules.context.terminating_types.get(rule.category.upper(), []))
        nlp.add_pipe("medspacy_context", config={"rules": None}).add(context_rules)
        self._nlp = nlp

    @classmethod
    def from_file(cls, path: Path) -> "Sectioner":
        return cls(load_rules(path))

    def structure(self, transcript: str) -> StructuredNote:
        text, edits = self._commands.apply(transcript)
        doc = self._nlp(text)
        sections = self._sections(doc)
        return StructuredNote(text=text, sections=sections, findings=self._findings(doc, sections),
                              dictation_commands=edits)

    def _sections(self, doc: Doc) -> list[Section]:
        text = doc.text
        found = [s for s in doc._.sections if s.category is not None or s.body_end > s.body_start]
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
        for ent in doc.ents:
            section = next((s for s in sections if s.start <= ent.start_char < s.end), None)
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
