"""Evaluation CLIs.

    python -m llavaction.evaluate mqa --questions val_mqa.jsonl --shards shards/val_mqa --checkpoint DIR_OR_CKPT \
        [--mode score|generate] [--scoring letter|likelihood] [--devices N] --out results/
    python -m llavaction.evaluate class-scores --predictions results/predictions.jsonl --out scores.npz
    python -m llavaction.evaluate ek100 --scores scores.npz --annotations DIR --split validation --out ek100.json
    python -m llavaction.evaluate submission --scores test_scores.npz --sls-pt 2 --sls-tl 3 --sls-td 4 --out test.zip
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from llavaction.jsonl import read_jsonl, write_json, write_jsonl
from llavaction.metrics import METRIC_KEYS, EpicActionMetrics

NUM_VERBS, NUM_NOUNS = 97, 300


def load_scores(path: Path) -> dict[str, np.ndarray]:
    """verb_output [N, 97], noun_output [N, 300], narration_id [N] from .npz (no pickles) or .pt (weights_only)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            scores = {k: data[k] for k in data.files}
    elif path.suffix == ".pt":
        loaded = torch.load(path, weights_only=True, map_location="cpu")
        scores = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in loaded.items()}
    else:
        raise ValueError(f"{path}: scores must be a .npz or .pt file")
    missing = [k for k in ("verb_output", "noun_output", "narration_id") if k not in scores]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    n = len(scores["narration_id"])
    for key, width in (("verb_output", NUM_VERBS), ("noun_output", NUM_NOUNS)):
        if scores[key].shape != (n, width):
            raise ValueError(f"{path}: {key} has shape {scores[key].shape}, expected ({n}, {width})")
    scores["narration_id"] = np.asarray([str(x) for x in scores["narration_id"]])
    return scores


def ek100_metrics(scores: dict[str, np.ndarray], annotations: Path, split: str) -> dict[str, float]:
    """The EPIC action-recognition figures (percent) for the segments of the scores file."""
    from llavaction.epic import EpicAnnotations

    ann = EpicAnnotations.load(annotations, split)
    by_id = {s.narration_id: s for s in ann.segments}
    unknown = [n for n in scores["narration_id"] if n not in by_id]
    if unknown:
        raise ValueError(f"{len(unknown)} narration ids are not in the {split} split, e.g. {unknown[:5]}")
    segments = [by_id[n] for n in scores["narration_id"]]
    metric = EpicActionMetrics()
    metric.update(
        torch.from_numpy(scores["verb_output"]).float(), torch.from_numpy(scores["noun_output"]).float(),
        torch.tensor([s.verb_class for s in segments]), torch.tensor([s.noun_class for s in segments]),
        torch.tensor([s.verb_class in ann.tail_verbs for s in segments]),
        torch.tensor([s.noun_class in ann.tail_nouns for s in segments]),
        torch.tensor([s.participant_id in ann.unseen_participants for s in segments]),
    )
    return {k: round(float(v), 4) for k, v in metric.compute().items()}


def write_submission(scores: dict[str, np.ndarray], out: Path, sls_pt: int, sls_tl: int, sls_td: int) -> None:
    """The EPIC-KITCHENS-100 action-recognition challenge file: test.json inside a zip."""
    results = {
        str(nid): {"verb": {str(v): float(s) for v, s in enumerate(verbs)},
                   "noun": {str(n): float(s) for n, s in enumerate(nouns)}}
        for nid, verbs, nouns in zip(scores["narration_id"], scores["verb_output"], scores["noun_output"])
    }
    payload = {"version": "0.2", "challenge": "action_recognition", "sls_pt": sls_pt, "sls_tl": sls_tl,
               "sls_td": sls_td, "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("test.json", json.dumps(payload))


def mqa_results(predictions: list[dict]) -> dict:
    """Accuracy (percent), parse failures and breakdowns over prediction records."""
    def accuracy(rows: list[dict]) -> dict:
        n = len(rows)
        return {"accuracy": round(100.0 * sum(r["correct"] for r in rows) / n, 4) if n else None, "count": n}

    groups = {
        "verb_head": [r for r in predictions if r.get("verb_tail") is False],
        "verb_tail": [r for r in predictions if r.get("verb_tail")],
        "noun_head": [r for r in predictions if r.get("noun_tail") is False],
        "noun_tail": [r for r in predictions if r.get("noun_tail")],
        "seen_participants": [r for r in predictions if r.get("unseen_participant") is False],
        "unseen_participants": [r for r in predictions if r.get("unseen_participant")],
    }
    failures = sum(r["parse_failed"] for r in predictions)
    return accuracy(predictions) | {
        "parse_failures": failures,
        "parse_failure_rate": round(100.0 * failures / max(1, len(predictions)), 4),
        "breakdown": {name: accuracy(rows) for name, rows in groups.items()},
    }


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return version("llavaction")


def load_module(checkpoint: str, tokenizer: str | None, scoring: str):
    """A Lightning .ckpt, or an original LLaVA-Video / LLaVAction checkpoint directory."""
    from llavaction.module import LlavaActionModule

    path = Path(checkpoint)
    if path.is_dir() and (path / "config.json").exists():
        return LlavaActionModule(checkpoint=str(path), tokenizer=tokenizer, mqa_scoring=(scoring,))
    return LlavaActionModule.load_from_checkpoint(str(path), map_location="cpu", mqa_scoring=(scoring,),
                                                  **({"tokenizer": tokenizer} if tokenizer else {}))


def run_mqa(args: argparse.Namespace) -> int:
    import lightning as L

    from llavaction.data.datamodule import EpicDataModule

    module = load_module(args.checkpoint, args.tokenizer, args.scoring)
    module.predict_generate = args.mode == "generate"
    data = EpicDataModule(test=[str(s) for s in args.shards], tokenizer=module.tokenizer_path,
                          tokens_per_frame=module.tokens_per_frame, extra_visual_tokens=module.extra_visual_tokens,
                          num_frames=args.num_frames,
                          eval_batch_size=args.batch_size, num_workers=args.num_workers)
    trainer = L.Trainer(accelerator="auto", devices=args.devices, logger=False, enable_checkpointing=False,
                        precision=args.precision)
    parts = trainer.predict(module, datamodule=data, return_predictions=True)
    local = [record for part in parts for record in part]
    gathered = [local]
    if trainer.world_size > 1:
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, local)
    if not trainer.is_global_zero:
        return 0
    predictions = sorted((r for rank in gathered for r in rank), key=lambda r: r["narration_id"])
    ids_per_file = {str(path): {q["narration_id"] for q in read_jsonl(path)} for path in args.questions}
    wanted = [n for ids in ids_per_file.values() for n in ids]
    found = {r["narration_id"] for r in predictions}
    missing = sorted(n for n in wanted if n not in found)
    if missing:
        raise ValueError(f"{len(missing)} questions have no frames in the shards, e.g. {missing[:5]}")
    if any("verb_scores" in r for r in predictions):
        write_head_outputs(predictions, args.out, args.candidates)
    per_file = {path: mqa_results([r for r in predictions if r["narration_id"] in ids])
                for path, ids in ids_per_file.items()}
    results = mqa_results(predictions) | {
        "per_question_file": per_file, "mode": args.mode, "scoring": args.scoring, "checkpoint": args.checkpoint,
        "config": {k: str(v) for k, v in vars(args).items() if k != "func"}, "code_version": code_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "predictions.jsonl", predictions)
    write_json(args.out / "results.json", results)
    write_lmms_eval(args.out, predictions, results)
    print(f"EK-100-MQA accuracy: {results['accuracy']:.2f}% on {results['count']} questions "
          f"({args.mode} mode, parse failures {results['parse_failures']}) -> {args.out}")
    return 0


def write_head_outputs(predictions: list[dict], out: Path, candidates: int) -> None:
    """The action heads' scores as an EK-100 scores file (head_scores.npz, for `ek100` and `submission`) and their
    top actions as candidate sets (head_candidates.json, the predictions format of data_prep.build_mqa)."""
    from llavaction.metrics import action_topk

    verbs = np.array([r.pop("verb_scores") for r in predictions], dtype=np.float32)
    nouns = np.array([r.pop("noun_scores") for r in predictions], dtype=np.float32)
    ids = np.array([r["narration_id"] for r in predictions])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "head_scores.npz", verb_output=verbs, noun_output=nouns, narration_id=ids)
    top_v, top_n = action_topk(torch.from_numpy(verbs), torch.from_numpy(nouns), candidates)
    write_json(out / "head_candidates.json", {
        str(nid): {"predictions": [f"{v}:{n}" for v, n in zip(vs, ns)]}
        for nid, vs, ns in zip(ids, top_v.tolist(), top_n.tolist())})


def write_lmms_eval(out: Path, predictions: list[dict], results: dict, task: str = "ek100_mqa") -> None:
    """The same figures in lmms-eval's two-file layout."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    write_json(out / f"{stamp}_results.json", {
        "results": {task: {"alias": task, "mqa_accuracy,none": results["accuracy"],
                           "mqa_accuracy_stderr,none": "N/A"}},
        "configs": {task: {"task": task, "output_type": "generate_until" if results["mode"] == "generate"
                           else "multiple_choice"}},
        "n-samples": {task: {"original": results["count"], "effective": results["count"]}},
    })
    write_jsonl(out / f"{stamp}_samples_{task}.jsonl", [
        {"doc_id": i, "doc": {"narration_id": r["narration_id"], "options": r["options"]},
         "target": r["answer_index"], "resps": [[r["generation"] if r["generation"] is not None else r["scores"]]],
         "filtered_resps": [r["chosen_index"]], "mqa_accuracy": float(r["correct"])}
        for i, r in enumerate(predictions)
    ])


ABSENT_CLASS_SCORE = -30.0  # log-score of a class no candidate names (about e^-30 of the probability mass)


def candidate_class_scores(predictions: list[dict]) -> dict[str, np.ndarray]:
    """Candidate re-ranking -> class scores. Per segment, the MLLM's option scores over its candidate actions become a
    softmax p; a verb's score is log(sum of p over the candidates with that verb), likewise for nouns; classes no
    candidate names get ABSENT_CLASS_SCORE."""
    verbs = np.full((len(predictions), NUM_VERBS), ABSENT_CLASS_SCORE, dtype=np.float32)
    nouns = np.full((len(predictions), NUM_NOUNS), ABSENT_CLASS_SCORE, dtype=np.float32)
    for row, record in enumerate(predictions):
        if not record.get("option_actions"):
            raise ValueError(f"{record['narration_id']}: predictions without option_actions cannot give class scores")
        logits = torch.tensor(record["scores"], dtype=torch.float64)
        p = logits.softmax(0).numpy()
        verb_mass, noun_mass = {}, {}
        for prob, action in zip(p, record["option_actions"]):
            verb, noun = (int(x) for x in action.split(":"))
            if not (0 <= verb < NUM_VERBS and 0 <= noun < NUM_NOUNS):
                raise ValueError(f"{record['narration_id']}: option action {action} names an unknown class "
                                 f"(verbs 0-{NUM_VERBS - 1}, nouns 0-{NUM_NOUNS - 1})")
            verb_mass[verb] = verb_mass.get(verb, 0.0) + prob
            noun_mass[noun] = noun_mass.get(noun, 0.0) + prob
        for verb, mass in verb_mass.items():
            verbs[row, verb] = np.log(max(mass, 1e-30))
        for noun, mass in noun_mass.items():
            nouns[row, noun] = np.log(max(mass, 1e-30))
    return {"verb_output": verbs, "noun_output": nouns,
            "narration_id": np.array([r["narration_id"] for r in predictions])}


def run_class_scores(args: argparse.Namespace) -> int:
    scores = candidate_class_scores(read_jsonl(args.predictions))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **scores)
    print(f"class scores of {len(scores['narration_id'])} segments -> {args.out}")
    return 0


def run_ek100(args: argparse.Namespace) -> int:
    figures = ek100_metrics(load_scores(args.scores), args.annotations, args.split)
    write_json(args.out, figures)
    for key in METRIC_KEYS:
        print(f"{key:32s} {figures[key]:7.2f}")
    return 0


def run_submission(args: argparse.Namespace) -> int:
    write_submission(load_scores(args.scores), args.out, args.sls_pt, args.sls_tl, args.sls_td)
    print(f"submission -> {args.out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    mqa = commands.add_parser("mqa", help="EK-100-MQA accuracy of a checkpoint")
    mqa.add_argument("--questions", type=Path, nargs="+", required=True)
    mqa.add_argument("--shards", type=Path, nargs="+", required=True)
    mqa.add_argument("--checkpoint", required=True, help="Lightning .ckpt or original checkpoint directory")
    mqa.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's)")
    mqa.add_argument("--mode", choices=("score", "generate"), default="score")
    mqa.add_argument("--scoring", choices=("letter", "likelihood"), default="letter", help="score mode's rule")
    mqa.add_argument("--devices", type=int, default=1, help="processes: GPUs when present, else CPU with gloo")
    mqa.add_argument("--num-frames", type=int, default=16)
    mqa.add_argument("--batch-size", type=int, default=8)
    mqa.add_argument("--num-workers", type=int, default=2)
    mqa.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-true on GPU")
    mqa.add_argument("--candidates", type=int, default=10,
                     help="with action heads: actions per segment in head_candidates.json")
    mqa.add_argument("--out", type=Path, required=True)
    mqa.set_defaults(func=run_mqa)
    ek100 = commands.add_parser("ek100", help="EPIC action-recognition metrics of a scores file")
    ek100.add_argument("--scores", type=Path, required=True)
    ek100.add_argument("--annotations", type=Path, required=True)
    ek100.add_argument("--split", choices=("train", "validation"), default="validation")
    ek100.add_argument("--out", type=Path, required=True)
    ek100.set_defaults(func=run_ek100)
    class_scores = commands.add_parser("class-scores", help="MQA predictions over candidate actions -> class scores")
    class_scores.add_argument("--predictions", type=Path, required=True, help="predictions.jsonl of `mqa`")
    class_scores.add_argument("--out", type=Path, required=True, help="scores .npz for `ek100` and `submission`")
    class_scores.set_defaults(func=run_class_scores)
    submission = commands.add_parser("submission", help="EPIC challenge submission zip")
    submission.add_argument("--scores", type=Path, required=True)
    submission.add_argument("--sls-pt", type=int, required=True, help="supervision level: pretraining")
    submission.add_argument("--sls-tl", type=int, required=True, help="supervision level: training labels")
    submission.add_argument("--sls-td", type=int, required=True, help="supervision level: training data")
    submission.add_argument("--out", type=Path, required=True)
    submission.set_defaults(func=run_submission)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
