"""medspaCy's matching, sectionizing and ConText steps, driven so that their cost grows linearly with the text.

medspaCy 1.3.1 as a spaCy pipeline is quadratic in the length of a note (measured: 50,000 characters 1.4 s,
200,000 characters 22 s, and minutes for adversarial text):

- ``TargetMatcher`` adds each entity with ``doc.ents += (span,)``, which rebuilds all entities every time;
- ``prune_overlapping_matches`` pops the head of a Python list (``list.pop(0)``) per match;
- ``RegexMatcher`` resolves a match that does not fall on token boundaries ("plan.x" is one token) by walking the
  document from its first token (``get_token_for_char``);
- ``Sectionizer`` sets ``token.sent_start`` per heading, and spaCy checks the whole document for a parse each time;
- ``ConText`` compares every modifier with every other modifier and every target with every modifier of the whole
  document, although a modifier's scope never leaves its sentence.

This module uses medspaCy's rule classes, ``ConTextModifier`` and ``ConTextGraph`` unchanged and reproduces the
same results (same matches, overlap pruning, sections, scopes and flags: see tests/unit/sections/test_long_texts.py)
with these steps replaced: token and phrase patterns go through spaCy's ``Matcher``/``PhraseMatcher`` exactly as in
``MedspacyMatcher``, regexes resolve to tokens by bisection, pruning runs pass for pass per group of overlapping
matches, entities and sentence starts are written once, and ConText runs sentence by sentence.

One deliberate difference: a "sentence" longer than ``MAX_SENTENCE_TOKENS`` tokens (speech without punctuation or
headings) is cut into pieces of that many tokens for ConText, so a negation reaches at most that far. Natural
sentences are far shorter, and without the cut one unpunctuated 200,000-character text is a single sentence whose
modifiers ConText compares pairwise.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from medspacy.common.base_rule import BaseRule
from medspacy.context import ConText, ConTextModifier
from medspacy.context.context import DEFAULT_ATTRIBUTES
from medspacy.context.context_graph import ConTextGraph
from spacy.attrs import SENT_START
from spacy.language import Language
from spacy.matcher import Matcher, PhraseMatcher
from spacy.tokens import Doc, Span

MAX_SENTENCE_TOKENS = 100

Match = tuple[int, int, int]  # (rule key, start token, end token), as spaCy's matchers return them


class RuleMatcher:
    """``medspacy.common.MedspacyMatcher`` (phrase attr LOWER, prune on): the same rule keys, the same matchers in the
    same order, the same results; regex matches resolve to tokens by bisection and pruning is linear."""

    def __init__(self, nlp: Language, rules: Iterable[BaseRule]) -> None:
        self.rule_map: dict[int, BaseRule] = {}
        self._matcher = Matcher(nlp.vocab)
        self._phrases = PhraseMatcher(nlp.vocab, attr="LOWER")
        self._regexes: list[tuple[int, re.Pattern[str]]] = []
        for count, rule in enumerate(rules):
            if rule.on_match is not None:
                raise ValueError(f"rule {rule.literal!r}: on_match callbacks are not supported")
            rule_id = f"{rule.category}_{count}"  # MedspacyMatcher's ids: the same keys, the same tie order
            key = nlp.vocab.strings.add(rule_id)
            self.rule_map[key] = rule
            if isinstance(rule.pattern, str):
                self._regexes.append((key, re.compile(rule.pattern, re.IGNORECASE)))
            elif isinstance(rule.pattern, list):
                self._matcher.add(rule_id, [rule.pattern])
            elif rule.pattern is None:
                self._phrases.add(rule_id, [nlp.tokenizer(rule.literal.lower())])
            else:
                raise ValueError(f"rule {rule.literal!r}: a pattern is a string or a list, not {type(rule.pattern)}")

    def __call__(self, doc: Doc) -> list[Match]:
        matches: list[Match] = []
        for matcher in (self._matcher, self._phrases):  # an empty spaCy matcher only warns (W036)
            if len(matcher):
                matches += [tuple(m) for m in matcher(doc)]
        return prune_overlapping(matches + self._regex_matches(doc))

    def _regex_matches(self, doc: Doc) -> list[Match]:
        """medspaCy's ``RegexMatcher`` (resolve_start "left", resolve_end "right"), with ``get_token_for_char`` as a
        bisection over the token offsets instead of a walk from the first token."""
        matches: list[Match] = []
        starts: list[int] | None = None
        text = doc.text_with_ws if self._regexes else ""  # joined from the tokens on each access: once
        for key, pattern in self._regexes:
            for found in pattern.finditer(text):
                span = doc.char_span(found.start(), found.end())
                if span is not None:
                    start, end = span.start, span.end
                else:
                    if starts is None:
                        starts = [token.idx for token in doc]
                    start, end = _token_left(starts, found.start()), bisect_left(starts, found.end())
                if end > start:  # medspaCy drops a match that resolves to no token
                    matches.append((key, start, end))
        return matches


def _token_left(starts: Sequence[int], char: int) -> int:
    """``get_token_for_char(doc, char, resolve="left").i``: the token starting at ``char``, else the one before (as
    medspaCy, ``doc[-1]`` when there is none before)."""
    i = bisect_left(starts, char)
    if i < len(starts) and starts[i] == char:
        return i
    return (i - 1) % len(starts)


def prune_overlapping(matches: list[Match]) -> list[Match]:
    """``medspacy.common.util.prune_overlapping_matches`` (strategy "longest"), pass for pass and with the same
    result, run separately on each group of overlapping matches: a pass never carries anything from one group into
    the next, and a group without overlaps is left as it is. medspaCy pops the head of the list per match and
    repeats its passes over the whole list."""
    ordered = sorted(matches, key=lambda m: (m[1], m[2]))
    result: list[Match] = []
    group: list[Match] = []
    group_end = -1
    for match in ordered:
        if group and match[1] >= group_end:
            result.extend(_prune_group(group) if len(group) > 1 else group)
            group = []
        group.append(match)
        group_end = match[2] if len(group) == 1 else max(group_end, match[2])
    if group:
        result.extend(_prune_group(group) if len(group) > 1 else group)
    return result


def _prune_group(matches: list[Match]) -> list[Match]:
    while True:
        unpruned = sorted(matches, key=lambda m: (m[1], m[2]))
        pruned = []
        current, i = unpruned[0], 1
        while True:
            if i == len(unpruned):
                pruned.append(current)
                break
            following = unpruned[i]
            i += 1
            if _overlaps(current, following):
                pruned.append(max(current, following, key=lambda m: m[2] - m[1]))  # ties: the first one
                if i == len(unpruned):
                    break
                current = unpruned[i]
                i += 1
            else:
                pruned.append(current)
                current = following
        if len(pruned) == len(matches):
            return pruned
        matches = pruned


def _overlaps(a: Match, b: Match) -> bool:
    return a[1] <= b[1] < a[2] or a[1] < b[2] <= a[2]  # medspacy.util.tuple_overlaps


def add_targets(doc: Doc, matcher: RuleMatcher) -> None:
    """``TargetMatcher`` (result_type "ents"): one labelled entity per match, ``span._.target_rule`` set, a span that
    overlaps an earlier one skipped; the entities are written once instead of once per span."""
    kept: list[Span] = []
    taken_until = 0
    for key, start, end in matcher(doc):
        rule = matcher.rule_map[key]
        span = Span(doc, start=start, end=end, label=rule.category)
        span._.target_rule = rule
        for attribute, value in (getattr(rule, "attributes", None) or {}).items():
            setattr(span._, attribute, value)
        if start < taken_until:  # medspaCy: spaCy refuses the overlapping entity, medspaCy warns and skips it
            continue
        kept.append(span)
        taken_until = end
    doc.ents = kept


class FoundSection(NamedTuple):
    """medspaCy's ``Section``, in token indexes."""

    category: str | None  # None: the text before the first heading
    title_start: int
    body_start: int
    body_end: int


def find_sections(doc: Doc, matcher: RuleMatcher) -> list[FoundSection]:
    """``Sectionizer`` (no parents, no line or length limits, no scope limits): the same sections as
    ``doc._.sections``. Each heading starts a sentence and so does the text after it (``apply_sentence_boundary``);
    then sentences longer than MAX_SENTENCE_TOKENS are cut; the sentence starts are written to the document once."""
    sent_starts = doc.to_array([SENT_START])
    one = sent_starts.dtype.type(1)
    matches = matcher(doc)
    first = matches[0][1] if matches else len(doc)
    sections = [] if matches and first == 0 else [FoundSection(None, 0, 0, first)]  # the text before any heading
    for i, (key, start, end) in enumerate(matches):
        body_end = matches[i + 1][1] if i + 1 < len(matches) else len(doc)
        sections.append(FoundSection(matcher.rule_map[key].category, start, end, body_end))
        sent_starts[start] = one
        if end < len(doc):
            sent_starts[end] = one
    run = 0
    for i, value in enumerate(sent_starts.tolist()):
        run = 0 if value == 1 else run + 1
        if run == MAX_SENTENCE_TOKENS:
            sent_starts[i] = one
            run = 0
    if len(doc):
        doc.from_array([SENT_START], sent_starts.reshape(-1, 1))
    return sections


def register_context_extensions() -> None:
    """The extensions ConText sets: ``Span._.modifiers``, ``Doc._.context_graph``, ``Span._.is_negated`` etc."""
    ConText.register_graph_attributes()
    ConText.register_default_attributes()


def apply_context(doc: Doc, matcher: RuleMatcher, attributes: dict = DEFAULT_ATTRIBUTES) -> None:
    """``ConText`` (sentence scopes, no global max_scope/max_targets, prune_on_target_overlap off): the same modifiers,
    scopes, edges (in the same order) and target flags, sentence by sentence. A modifier's scope lies inside its
    sentence, so it can only limit, or be limited by, modifiers of that sentence (medspaCy's ``tuple_overlaps`` of
    scopes in different sentences never changes a scope) and only modify targets that overlap that sentence."""
    targets = list(doc.ents)
    modifiers = [ConTextModifier(matcher.rule_map[key], start, end, doc) for key, start, end in matcher(doc)]
    sentence_of = []
    number = -1
    for i, value in enumerate(doc.to_array([SENT_START]).tolist()):
        number += value == 1 or i == 0
        sentence_of.append(number)
    by_sentence: dict[int, tuple[list[ConTextModifier], list[Span]]] = {}
    for modifier in modifiers:
        by_sentence.setdefault(sentence_of[modifier.modifier_span[0]], ([], []))[0].append(modifier)
    for target in targets:
        for sentence in range(sentence_of[target.start], sentence_of[target.end - 1] + 1):
            if sentence in by_sentence:
                by_sentence[sentence][1].append(target)
    edges = []
    for sentence in sorted(by_sentence):
        sentence_modifiers, sentence_targets = by_sentence[sentence]
        if not sentence_targets:
            continue  # nothing to modify: the scopes only decide which targets a modifier reaches
        update_scopes(sentence_modifiers)
        edges.extend(apply_modifiers(sentence_modifiers, sentence_targets))
    for target, modifier in edges:
        target._.modifiers += (modifier,)
        for name, value in attributes.get(modifier.category, {}).items():
            setattr(target._, name, value)
    doc._.context_graph = ConTextGraph(targets=targets, modifiers=modifiers, edges=edges)


def update_scopes(modifiers: Sequence[ConTextModifier]) -> None:
    """``ConTextGraph.update_scopes``: the same ``limit_scope`` calls in the same order, less the ones that cannot
    change a scope. The modifiers are sorted and do not overlap (pruned matches), so for i < j only ``modifiers[j]``
    starting inside the forward scope of ``modifiers[i]`` can end it, and only ``modifiers[i]`` ending inside the
    backward scope of ``modifiers[j]`` can start it later; past the last backward modifier, the first j outside the
    forward scope ends the inner loop. medspaCy calls both for every pair: quadratic in a sentence's modifiers."""
    forward = [m.direction.lower() in ("forward", "bidirectional") for m in modifiers]
    backward = [m.direction.lower() in ("backward", "bidirectional") for m in modifiers]
    last_backward = max((j for j, b in enumerate(backward) if b), default=-1)
    for i, first in enumerate(modifiers):
        first_end = first.modifier_span[1]
        for j in range(i + 1, len(modifiers)):
            second = modifiers[j]
            second_start = second.modifier_span[0]
            inside = forward[i] and second_start < first.scope_span[1]
            if inside:
                first.limit_scope(second)
            if backward[j] and first_end > second.scope_span[0]:
                second.limit_scope(first)
            if not inside and j >= last_backward:
                break


def apply_modifiers(modifiers: Sequence[ConTextModifier],
                    targets: Sequence[Span]) -> list[tuple[Span, ConTextModifier]]:
    """``ConTextGraph.apply_modifiers`` (prune_on_modifier_overlap off): each modifier modifies, in target order, the
    targets it ``modifies``; only targets that ``tuple_overlaps`` its scope are asked (found by bisection, the
    targets are entities: sorted, not overlapping). Then ``reduce_targets`` and the edges, modifier by modifier."""
    starts = [t.start for t in targets]
    ends = [t.end for t in targets]
    edges = []
    for modifier in modifiers:
        scope_start, scope_end = modifier.scope_span
        # tuple_overlaps(scope, target): the target starts in [scope_start, scope_end) or ends in
        # (scope_start, scope_end]
        candidates = set(range(bisect_left(starts, scope_start), bisect_left(starts, scope_end)))
        candidates.update(range(bisect_right(ends, scope_start), bisect_right(ends, scope_end)))
        for i in sorted(candidates):
            if modifier.modifies(targets[i]):
                modifier.modify(targets[i])
        modifier.reduce_targets()
        edges.extend((target, modifier) for target in modifier._targets)
    return edges
