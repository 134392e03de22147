"""From the MLLM to EK-100 class scores: candidate re-ranking, and the action heads' own scores and candidates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from llavaction.ek100.annotations import NUM_NOUNS, NUM_VERBS, parse_action
from llavaction.ek100.metrics import action_topk
from llavaction.utils.files import atomic_output
from llavaction.utils.jsonl import write_json

ABSENT_CLASS_SCORE = -30.0  # log-score of a class no candidate names (about e^-30 of the probability mass)


def candidate_class_scores(predictions: list[dict], source: str = "predictions") -> dict[str, np.ndarray]:
    """Candidate re-ranking -> class scores. Per segment, the MLLM's option scores over its candidate actions become a
    softmax p; a verb's score is log(sum of p over the candidates with that verb), likewise for nouns; classes no
    candidate names get ABSENT_CLASS_SCORE."""
    verbs = np.full((len(predictions), NUM_VERBS), ABSENT_CLASS_SCORE, dtype=np.float32)
    nouns = np.full((len(predictions), NUM_NOUNS), ABSENT_CLASS_SCORE, dtype=np.float32)
    for row, record in enumerate(predictions):
        name = record.get("narration_id", f"line {row + 1}")
        if not record.get("option_actions"):
            raise ValueError(f"{source}: {name}: predictions without option_actions cannot give class scores")
        if not all(math.isfinite(x) for x in record["scores"]):
            raise ValueError(f"{source}: {name}: non-finite option scores (from --mode generate? use --mode score)")
        p = torch.tensor(record["scores"], dtype=torch.float64).softmax(0).numpy()
        verb_mass: dict[int, float] = {}
        noun_mass: dict[int, float] = {}
        for prob, action in zip(p, record["option_actions"]):
            try:
                verb, noun = parse_action(action)
            except ValueError as err:
                raise ValueError(f"{source}: {name}: {err}") from None
            if not (0 <= verb < NUM_VERBS and 0 <= noun < NUM_NOUNS):
                raise ValueError(
                    f"{source}: {name}: option action {action} names an unknown class "
                    f"(verbs 0-{NUM_VERBS - 1}, nouns 0-{NUM_NOUNS - 1})"
                )
            verb_mass[verb] = verb_mass.get(verb, 0.0) + prob
            noun_mass[noun] = noun_mass.get(noun, 0.0) + prob
        for verb, mass in verb_mass.items():
            verbs[row, verb] = np.log(max(mass, 1e-30))
        for noun, mass in noun_mass.items():
            nouns[row, noun] = np.log(max(mass, 1e-30))
    return {
        "verb_output": verbs,
        "noun_output": nouns,
        "narration_id": np.array([r["narration_id"] for r in predictions]),
    }


def write_head_outputs(predictions: list[dict], out: Path, candidates: int) -> None:
    """The action heads' scores as an EK-100 scores file (head_scores.npz, for `ek100` and `submission`) and their
    top actions as candidate sets (head_candidates.json, the predictions format of data_prep.build_mqa). The scores
    are taken out of the prediction records."""
    verbs = np.array([r.pop("verb_scores") for r in predictions], dtype=np.float32)
    nouns = np.array([r.pop("noun_scores") for r in predictions], dtype=np.float32)
    ids = np.array([r["narration_id"] for r in predictions])
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "head_scores.npz", "wb") as stream:
        np.savez(stream, verb_output=verbs, noun_output=nouns, narration_id=ids)
    write_json(out / "head_candidates.json", ranked_actions(verbs, nouns, ids, candidates))


def ranked_actions(verbs: np.ndarray, nouns: np.ndarray, ids: np.ndarray, top: int) -> dict:
    """An action model's verb and noun scores as build_mqa's predictions file: per segment its `top` actions, best
    first ({narration_id: {"predictions": ["verb:noun", ...]}})."""
    top_v, top_n = action_topk(torch.from_numpy(verbs), torch.from_numpy(nouns), top)
    return {
        str(nid): {"predictions": [f"{v}:{n}" for v, n in zip(vs, ns)]}
        for nid, vs, ns in zip(ids, top_v.tolist(), top_n.tolist())
    }
