"""The validity audit of an EK-100-MQA question file: are the wrong options really wrong, and can the answer be
found without the video?

Counts, each with a few examples: distractors of the ground truth's own action (verb and noun classes; a valid file
has none), options with the same text, option pairs that differ only by words of one EK-100 class (synonyms in the
class lists), questions without the ground truth among the options (builds without --benchmark), and how hard the
distractors are (sharing the verb, the noun, or neither). Two blind baselines, which a valid benchmark keeps near
chance: the option whose action is the most frequent in training (no video), and the option whose text is the most
similar to the others (no video, no annotations). Accuracies carry their 95% interval from a bootstrap over videos.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from llavaction.benchmark.uncertainty import cluster_of, clustered_interval
from llavaction.ek100.annotations import parse_action
from llavaction.ek100.lexicon import ClassLexicon, words

Action = tuple[int, int]


def normalized(text: str) -> str:
    """An option text as compared for identity: lower case, letters and digits only ('Take cup.' -> 'take cup')."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _example(question: dict, **details) -> dict:
    return {"narration_id": question["narration_id"], "options": question["options"]} | details


class Finding:
    """A count of questions (and of occurrences) with the first few examples."""

    def __init__(self, examples: int):
        self.questions = self.occurrences = 0
        self.examples: list[dict] = []
        self.limit = examples

    def add(self, question: dict, occurrences: int, **details) -> None:
        if occurrences:
            self.questions += 1
            self.occurrences += occurrences
            if len(self.examples) < self.limit:
                self.examples.append(_example(question, **details))

    def as_dict(self) -> dict:
        return {"questions": self.questions, "occurrences": self.occurrences, "examples": self.examples}


def most_frequent_choice(question: dict, counts: dict[Action, int]) -> int:
    """The option whose action is the most frequent in training (the first of equals)."""
    actions = [parse_action(a) for a in question["option_actions"]]
    return max(range(len(actions)), key=lambda i: (counts.get(actions[i], 0), -i))


def most_similar_choice(question: dict) -> int:
    """The option whose words overlap the most with the other options' (mean Jaccard; the first of equals)."""
    bags = [words(text) for text in question["options"]]

    def overlap(i: int) -> float:
        return sum(len(bags[i] & bags[j]) / max(1, len(bags[i] | bags[j])) for j in range(len(bags)) if j != i)

    return max(range(len(bags)), key=lambda i: (overlap(i), -i))


def blind_baseline(questions: list[dict], choose: Callable[[dict], int]) -> dict:
    """Accuracy of a rule that never sees the video, over the questions that have their ground truth, with its
    interval."""
    answered = [q for q in questions if q.get("answer_index") is not None]
    if not answered:
        return {"questions": 0}
    hits = [float(choose(q) == q["answer_index"]) for q in answered]
    return clustered_interval(hits, [cluster_of(q) for q in answered]).as_dict() | {"questions": len(answered)}


def audit_questions(questions: list[dict], lexicon: ClassLexicon, counts: dict[Action, int], examples: int = 3) -> dict:
    """The audit of one question file's records (see the module's docstring); `counts` are the training split's
    action counts of the frequency baseline."""
    collisions, identical, synonyms, missing = (Finding(examples) for _ in range(4))
    hardness = {"shares_verb": 0, "shares_noun": 0, "neither": 0}
    sizes = set()
    for question in questions:
        options, actions = question["options"], [parse_action(a) for a in question["option_actions"]]
        sizes.add(len(options))
        gt, answer = (question["verb_class"], question["noun_class"]), question.get("answer_index")
        distractors = [i for i in range(len(options)) if i != answer]
        same = [options[i] for i in distractors if actions[i] == gt]
        collisions.add(question, len(same), ground_truth=question.get("narration"), options_of_its_action=same)
        missing.add(question, int(answer is None), ground_truth=question.get("narration"))
        texts = [normalized(text) for text in options]
        repeated = sorted({options[i] for i in range(len(texts)) if texts.count(texts[i]) > 1})
        identical.add(question, len(texts) - len(set(texts)), repeated=repeated)
        pairs = [
            (options[i], options[j], kind)
            for i, j in itertools.combinations(range(len(options)), 2)
            if (kind := lexicon.synonym_class(options[i], options[j])) is not None
        ]
        synonyms.add(question, len(pairs), pairs=[list(pair) for pair in pairs])
        for i in distractors:
            if actions[i] == gt:
                continue
            shares = "shares_verb" if actions[i][0] == gt[0] else "shares_noun" if actions[i][1] == gt[1] else "neither"
            hardness[shares] += 1
    total = sum(hardness.values())
    return {
        "questions": len(questions),
        "num_options": sorted(sizes),
        "videos": len({cluster_of(q) for q in questions}),
        "ground_truth_action_among_distractors": collisions.as_dict(),
        "identical_options": identical.as_dict(),
        "synonym_pairs": synonyms.as_dict(),
        "missing_ground_truth": missing.as_dict(),
        "distractor_hardness": {"distractors": total}
        | {name: {"count": n, "percent": round(100 * n / max(1, total), 2)} for name, n in hardness.items()},
        "blind_baselines": {
            "chance": round(100 / max(sizes), 2) if sizes else None,
            "most_frequent_action": blind_baseline(questions, lambda q: most_frequent_choice(q, counts)),
            "most_similar_option": blind_baseline(questions, most_similar_choice),
        },
    }


def audit_text(name: str, audit: dict) -> str:
    """The audit as a few lines of text."""
    hard, blind = audit["distractor_hardness"], audit["blind_baselines"]

    def count(key: str) -> str:
        """'2 in 1 questions, e.g. P01_01_3' (the examples' ids; the JSON has them whole)."""
        finding = audit[key]
        ids = [example["narration_id"] for example in finding["examples"]]
        return f"{finding['occurrences']} in {finding['questions']} questions" + (
            f", e.g. {', '.join(ids)}" if ids else ""
        )

    def accuracy(key: str) -> str:
        figure = blind[key]
        return f"{figure['value']:.1f}% [{figure['low']:.1f}, {figure['high']:.1f}]" if "value" in figure else "n/a"

    return "\n".join(
        [
            f"{name}: {audit['questions']} questions over {audit['videos']} videos, K = {audit['num_options']}",
            f"  distractors of the ground truth's action (must be 0): {count('ground_truth_action_among_distractors')}",
            f"  options with identical text: {count('identical_options')}",
            f"  option pairs differing only by words of one class: {count('synonym_pairs')}",
            f"  questions without the ground truth: {count('missing_ground_truth')}",
            f"  distractors sharing the verb {hard['shares_verb']['percent']:.1f}%, the noun "
            f"{hard['shares_noun']['percent']:.1f}%, neither {hard['neither']['percent']:.1f}% "
            f"(of {hard['distractors']})",
            f"  blind baselines (chance {blind['chance']}%): most frequent training action "
            f"{accuracy('most_frequent_action')}, most similar option text {accuracy('most_similar_option')}",
        ]
    )
