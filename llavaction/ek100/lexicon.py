"""The words of each EK-100 class, from the class CSVs' `instances` column: what annotators wrote for it.

A verb instance is a phrasal verb ('pick-up', 'take-from'), a noun instance a compound written head first
('spoon:wooden'); the head word ('pick', 'spoon') is what names the class. Two option texts that differ only by head
words of one class say the same thing in other words: the audit of a question file counts them.
"""

from __future__ import annotations

import ast
import csv
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from llavaction.ek100.annotations import VERB_CLASSES_FILE, AnnotationError, noun_class_files

_WORD = re.compile(r"[a-z]+")
# Words that complete a verb or a noun phrase without naming a class.
PARTICLES = frozenset(
    "a an the some it them up down out off on in into onto from to of with away back over under around".split()
)


def words(text: str) -> set[str]:
    """The lower-case words of a text ('Pick-up the cup' -> {'pick', 'up', 'the', 'cup'})."""
    return set(_words(text))


def read_class_heads(path: Path, separator: str) -> list[set[str]]:
    """Per class id, the head words of its key and instances (the part before the first `separator`)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as err:
        raise AnnotationError(path, 0, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    heads: dict[int, set[str]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            names = [row["key"], *ast.literal_eval(row.get("instances") or "[]")]
            heads[int(row["id"])] = {name.split(separator)[0].lower() for name in names if isinstance(name, str)}
        except (KeyError, ValueError, TypeError, SyntaxError) as err:
            raise AnnotationError(path, line, f"bad class row ({err})") from None
    return [heads[i] for i in sorted(heads)]


@dataclass(frozen=True)
class ClassLexicon:
    """Head words of every verb and noun class."""

    verbs: list[set[str]]
    nouns: list[set[str]]

    @classmethod
    def load(cls, root: Path | str) -> ClassLexicon:
        root = Path(root)
        return cls(read_class_heads(root / VERB_CLASSES_FILE, "-"), read_class_heads(noun_class_files(root)[0], ":"))

    @cached_property
    def verb_classes_of(self) -> dict[str, set[int]]:
        """Head word -> the verb classes it names."""
        return _index(self.verbs)

    @cached_property
    def noun_classes_of(self) -> dict[str, set[int]]:
        """Head word -> the noun classes it names."""
        return _index(self.nouns)

    def synonym_class(self, a: str, b: str) -> str | None:
        """'verb <id>' or 'noun <id>' when texts a and b (narrations: the verb first, then the noun phrase) differ only
        by head words of that one class, in the verb or in the noun phrase, particles and articles ('up', 'the')
        aside; else None. A differing word that names no class ('wooden', a plural) makes the texts different."""
        (verb_a, *rest_a), (verb_b, *rest_b) = _words(a) or [""], _words(b) or [""]
        nouns_a, nouns_b = set(rest_a) - PARTICLES, set(rest_b) - PARTICLES
        if verb_a != verb_b and nouns_a == nouns_b:
            kind, index, differing = "verb", self.verb_classes_of, {verb_a, verb_b}
        elif verb_a == verb_b and nouns_a - nouns_b and nouns_b - nouns_a:
            kind, index, differing = "noun", self.noun_classes_of, nouns_a ^ nouns_b
        else:
            return None
        if any(word not in index for word in differing):
            return None
        shared = set.intersection(*(index[word] for word in differing))
        return f"{kind} {min(shared)}" if shared else None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _index(classes: list[set[str]]) -> dict[str, set[int]]:
    index: dict[str, set[int]] = {}
    for number, heads in enumerate(classes):
        for head in heads:
            index.setdefault(head, set()).add(number)
    return index
