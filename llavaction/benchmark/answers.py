"""The EK-100-MQA answer rule and prediction records: how a generated answer is read (the paper's rule, the reference's
exact rule, the lenient letter parse), which option it chose, and one line of predictions.jsonl. Pure Python, shared
by validation, evaluation, the report and the data pipeline (pseudo prior actions)."""

from __future__ import annotations

import re

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
    """The text before its first '.' that ends it or is followed by a space or a capital letter ('rinse knife.' ->
    'rinse knife'; 'close drawer.Then I ...' -> 'close drawer': a sentence whose space went missing)."""
    return re.sub(r"\.(?:\s.*|(?=[A-Z]).*)?$", "", text, count=1)


def paper_answer_text(generation: str) -> str:
    """The answer text by the paper's rule (the reference's process_raw_pred): the text after the last 'X. ' (the
    whole answer when it names no lettered option), up to the next '. ', '.X' (X a capital) or a final '.'. The
    reference cuts a lettered answer at its first '.' anywhere, which turns a narration such as 'rinse knife.' into
    'rinse knife' and so can never match it, and compares an answer without a letter whole; here a period counts only
    before a space, a capital or at the end, in every answer and in the ground truth alike (paper_correct), so 'put
    spatula into rack.' answered without a letter matches its option as the reference matches it, and 'B. close
    drawer.Then ...' reads 'close drawer' as the reference reads it."""
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
        "video_id": meta.get("video_id"),
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
