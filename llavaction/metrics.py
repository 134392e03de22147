"""EPIC-KITCHENS-100 action-recognition metrics as a torchmetrics Metric (summed over ranks), and MQA answer parsing."""

from __future__ import annotations

import re

import torch
from torchmetrics import Metric

TOP_N_ACTION = 100  # EPIC: actions are ranked from the top-100 verbs x top-100 nouns
METRIC_KEYS = (
    "all_verb_accuracy_at_1",
    "all_verb_accuracy_at_5",
    "all_noun_accuracy_at_1",
    "all_noun_accuracy_at_5",
    "all_action_accuracy_at_1",
    "all_action_accuracy_at_5",
    "tail_verb_accuracy_at_1",
    "tail_noun_accuracy_at_1",
    "tail_action_accuracy_at_1",
    "unseen_verb_accuracy_at_1",
    "unseen_noun_accuracy_at_1",
    "unseen_action_accuracy_at_1",
)


def action_topk(verb_scores: torch.Tensor, noun_scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EPIC's action ranking: softmax over all verbs and all nouns, the outer product of the top-100 of each, the k
    best pairs. Returns verb and noun classes, each [N, k]."""
    verb_p, noun_p = verb_scores.float().softmax(-1), noun_scores.float().softmax(-1)
    top_vp, top_v = verb_p.topk(min(TOP_N_ACTION, verb_p.shape[1]), dim=-1)
    top_np, top_n = noun_p.topk(min(TOP_N_ACTION, noun_p.shape[1]), dim=-1)
    pair = (top_vp[:, :, None] * top_np[:, None, :]).flatten(1)
    best = pair.topk(k, dim=-1).indices
    return top_v.gather(1, best // top_n.shape[1]), top_n.gather(1, best % top_n.shape[1])


def segment_group(key: str) -> str:
    """The segments a metric is counted over: 'all', 'unseen', or the tail of its kind ('tail_verb', ...)."""
    group, kind = key.split("_")[:2]
    return group if group in ("all", "unseen") else f"tail_{kind}"


class EpicActionMetrics(Metric):
    """Top-1/top-5 verb, noun and action accuracy, and top-1 on tail classes and unseen participants (percent).
    A segment is tail for verbs if its verb is tail, for nouns if its noun is, and for actions if either is."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for key in METRIC_KEYS:
            self.add_state(f"correct_{key}", default=torch.tensor(0.0), dist_reduce_fx="sum")
        for group in ("all", "tail_verb", "tail_noun", "tail_action", "unseen"):
            self.add_state(f"count_{group}", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(
        self,
        verb_scores: torch.Tensor,
        noun_scores: torch.Tensor,
        verb: torch.Tensor,
        noun: torch.Tensor,
        verb_tail: torch.Tensor,
        noun_tail: torch.Tensor,
        unseen: torch.Tensor,
    ) -> None:
        verb_hit = verb_scores.topk(5, dim=-1).indices == verb[:, None]
        noun_hit = noun_scores.topk(5, dim=-1).indices == noun[:, None]
        top_v, top_n = action_topk(verb_scores, noun_scores, 5)
        action_hit = (top_v == verb[:, None]) & (top_n == noun[:, None])
        groups = {
            "all": torch.ones_like(verb_tail, dtype=torch.bool),
            "tail_verb": verb_tail,
            "tail_noun": noun_tail,
            "tail_action": verb_tail | noun_tail,
            "unseen": unseen,
        }
        for name, mask in groups.items():
            setattr(self, f"count_{name}", getattr(self, f"count_{name}") + mask.sum())
        hits = {"verb": verb_hit, "noun": noun_hit, "action": action_hit}
        for key in METRIC_KEYS:
            kind, k = key.split("_")[1], int(key[-1])
            correct = hits[kind][:, :k].any(-1) & groups[segment_group(key)]
            setattr(self, f"correct_{key}", getattr(self, f"correct_{key}") + correct.sum())

    def update_from_batch(self, verb_scores: torch.Tensor, noun_scores: torch.Tensor, batch: dict) -> None:
        """update() with a collated batch's labels, leaving out padding rows and segments without classes."""
        keep = ~batch["is_padding"] & (batch["verb_class"] >= 0)
        self.update(
            verb_scores[keep],
            noun_scores[keep],
            batch["verb_class"][keep],
            batch["noun_class"][keep],
            batch["verb_tail"][keep],
            batch["noun_tail"][keep],
            batch["unseen"][keep],
        )

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for key in METRIC_KEYS:
            count = getattr(self, f"count_{segment_group(key)}")
            out[key] = 100.0 * getattr(self, f"correct_{key}") / count.clamp(min=1)
        return out


_LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])\)?(?:[.:)\]]|\s|$)")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*\(?([A-Z])\b\)?", re.IGNORECASE)
_LETTERED_TEXT = re.compile(r"[A-Z]\.\s(.+)")  # the reference's process_raw_pred pattern


def parse_choice(text: str, options: list[str]) -> int | None:
    """The lenient parse: the option a generated answer names by a leading letter ("B", "B.", "(B)", "B. open
    drawer"), "The answer is B", or an option's text without its letter (the longest one found); None if none."""
    count = len(options)
    for pattern in (_LEADING_LETTER, _ANSWER_IS):
        match = pattern.search(text)
        if match and ord(match.group(1)) - ord("A") < count:
            return ord(match.group(1)) - ord("A")
    lowered = " ".join(text.lower().split())
    found = [(len(option), i) for i, option in enumerate(options) if option and option.lower() in lowered]
    return max(found)[1] if found else None


def _option_answer(generation: str) -> str | None:
    """What follows the last 'X. ' (any capital letter) of the answer, as the reference reads it; None without one."""
    matches = _LETTERED_TEXT.findall(generation.rstrip(","))
    return matches[-1] if matches else None


def _up_to_sentence_end(text: str) -> str:
    """The text before its first '.' that ends it or is followed by a space ('rinse knife.' -> 'rinse knife')."""
    return re.sub(r"\.(\s.*)?$", "", text, count=1)


def paper_answer_text(generation: str) -> str:
    """The answer text by the paper's rule (the reference's process_raw_pred): the text after the last 'X. ' (the
    whole answer when it names no lettered option), up to the next '. ' or a final '.'. The reference cuts a lettered
    answer at its first '.' anywhere, which turns a narration such as 'rinse knife.' into 'rinse knife' and so can
    never match it, and compares an answer without a letter whole; here a period counts only before a space or at
    the end, in every answer and in the ground truth alike (paper_correct), so 'put spatula into rack.' answered
    without a letter matches its option as the reference matches it."""
    text = generation.rstrip(",")
    if "None" in text:  # the reference's special case, kept as is
        return text.replace("None. ", "")
    answer = _option_answer(text)
    return _up_to_sentence_end(text if answer is None else answer)


def paper_correct(generation: str, answer_text: str) -> bool:
    """The paper's MQA metric: the answer text (paper_answer_text) equals the ground-truth option's text, read up to
    its sentence end the same way."""
    return paper_answer_text(generation) == _up_to_sentence_end(answer_text)


def reference_exact_correct(generation: str, answer_text: str) -> bool:
    """The reference's rule exactly, period bug included, for comparison with its published figures."""
    text = generation.rstrip(",")
    if "None" in text:
        return text.replace("None. ", "") == answer_text
    answer = _option_answer(text)
    return (text if answer is None else re.sub(r"\.\s*.*$", "", answer)) == answer_text


def rule_choice(generation: str, options: list[str], answer_index: int | None = None) -> int | None:
    """The option the paper's rule reads in a generated answer: the one whose text (read up to its sentence end)
    equals the answer text; the right option when several do; None when none does. paper_correct(generation,
    options[answer_index]) holds exactly when this is answer_index."""
    text = paper_answer_text(generation)
    matching = [i for i, option in enumerate(options) if _up_to_sentence_end(option) == text]
    if answer_index in matching:
        return answer_index
    return matching[0] if matching else None


def prediction_record(meta: dict, scores: list[float], generation: str | None) -> dict:
    """One line of predictions.jsonl. `rule_choice_index` is the option chosen by the run's headline rule and
    `correct` whether it is the right one: with a generation, the paper's rule on its text (rule_choice, None when the
    answer matches no option); without, the best score. With a generation, `letter_choice_index` is the option the
    answer names by its letter (the lenient parse, parse_choice) and `letter_correct` whether that is right."""
    answer = meta.get("answer_index")
    record = {
        "narration_id": meta["narration_id"],
        "options": meta["options"],
        "option_actions": meta.get("option_actions"),
        "scores": scores,
        "generation": generation,
        "answer_index": answer,
        **{k: meta.get(k) for k in ("verb_class", "noun_class", "verb_tail", "noun_tail", "unseen_participant")},
    }
    if generation is None:
        chosen = max(range(len(scores)), key=scores.__getitem__)
        return record | {"rule_choice_index": chosen, "correct": chosen == answer, "parse_failed": False}
    letter = parse_choice(generation, meta["options"])
    truth = meta["options"][answer] if answer is not None else None
    return record | {
        "rule_choice_index": rule_choice(generation, meta["options"], answer),
        "answer_text": paper_answer_text(generation),
        "correct": truth is not None and paper_correct(generation, truth),
        "letter_choice_index": letter,
        "letter_correct": letter is not None and letter == answer,
        "reference_exact_correct": truth is not None and reference_exact_correct(generation, truth),
        "parse_failed": letter is None,
    }


def choice_index(record: dict) -> int | None:
    """The option a prediction record chose by its headline rule (`chosen_index` in files written before the rule
    and the letter had names of their own, where it was the letter)."""
    return record["rule_choice_index"] if "rule_choice_index" in record else record.get("chosen_index")


def chosen_option_texts(predictions: list[dict]) -> dict[str, str]:
    """narration_id -> the option text a predictions.jsonl chose by its headline rule (questions without a choice
    left out): the model's own earlier answers, which prior_actions='pseudo' shows in place of the ground truth."""
    return {r["narration_id"]: r["options"][choice_index(r)] for r in predictions if choice_index(r) is not None}
