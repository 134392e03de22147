"""EPIC-KITCHENS-100 action recognition from a scores file: the official figures and the challenge submission."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from llavaction.benchmark.uncertainty import clustered_interval
from llavaction.ek100.annotations import NUM_NOUNS, NUM_VERBS, EpicAnnotations
from llavaction.ek100.metrics import METRIC_KEYS, EpicActionMetrics, segment_group, segment_groups, top5_hits
from llavaction.utils.files import atomic_output


class ScoresError(ValueError):
    """A scores file that cannot give figures; the message names the file and the rows."""


def load_scores(path: Path) -> dict[str, np.ndarray]:
    """verb_output [N, 97], noun_output [N, 300], narration_id [N] from .npz (no pickles) or .pt (weights_only).
    Shapes, duplicated narration ids and non-finite scores are errors naming the file and the rows."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such scores file")
    if path.suffix not in (".npz", ".pt"):
        raise ScoresError(f"{path}: scores must be a .npz or .pt file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                scores = {k: data[k] for k in data.files}
        else:
            loaded = torch.load(path, weights_only=True, map_location="cpu")
            scores = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in loaded.items()}
    except ValueError as err:
        if "allow_pickle" in str(err):  # object arrays (ids as Python strings) are pickles: never read
            raise ScoresError(f"{path}: holds object arrays (pickled); save narration_id as a string array") from None
        raise ScoresError(f"{path}: not a readable scores file ({err})") from None
    except Exception as err:  # empty, truncated or foreign files: EOFError, BadZipFile, pickle and zip errors alike
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ScoresError(f"{path}: not a readable scores file ({type(err).__name__}: {detail})") from None
    missing = [k for k in ("verb_output", "noun_output", "narration_id") if k not in scores]
    if missing:
        raise ScoresError(f"{path}: missing {', '.join(missing)}")
    ids = np.asarray([str(x) for x in scores["narration_id"]])
    for key, width in (("verb_output", NUM_VERBS), ("noun_output", NUM_NOUNS)):
        if scores[key].shape != (len(ids), width):
            raise ScoresError(f"{path}: {key} has shape {scores[key].shape}, expected ({len(ids)}, {width})")
        bad = ~np.isfinite(scores[key]).all(axis=1)
        if bad.any():
            raise ScoresError(
                f"{path}: {key} holds NaN or infinite scores in {int(bad.sum())} rows, e.g. {', '.join(ids[bad][:5])}"
            )
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ScoresError(f"{path}: duplicated narration ids {', '.join(unique[counts > 1][:5])}")
    scores["narration_id"] = ids
    return scores


def ek100_metrics(
    scores: dict[str, np.ndarray], annotations: Path, split: str, partial: bool = False, source: str = "scores"
) -> dict:
    """The EPIC action-recognition figures (percent) of the scored segments, with `segments` (how many) and
    `split_segments`; a figure over no segment (annotations without tail classes or unseen participants) is None and
    named in `not_applicable`. A file covering only part of the split is an error unless partial."""
    ann = EpicAnnotations.load(annotations, split)
    by_id = {s.narration_id: s for s in ann.segments}
    unknown = [n for n in scores["narration_id"] if n not in by_id]
    if unknown:
        raise ScoresError(f"{source}: {len(unknown)} narration ids are not in the {split} split, e.g. {unknown[:5]}")
    if len(scores["narration_id"]) < len(by_id) and not partial:
        absent = sorted(set(by_id) - set(scores["narration_id"]))
        raise ScoresError(
            f"{source}: covers {len(scores['narration_id'])} of the {len(by_id)} segments of the {split} "
            f"split (e.g. {absent[:3]} are absent); pass --partial for figures over those it covers"
        )
    segments = [by_id[n] for n in scores["narration_id"]]
    labels = (
        torch.tensor([s.verb_class for s in segments]),
        torch.tensor([s.noun_class for s in segments]),
        torch.tensor([s.verb_class in ann.tail_verbs for s in segments]),
        torch.tensor([s.noun_class in ann.tail_nouns for s in segments]),
        torch.tensor([s.participant_id in ann.unseen_participants for s in segments]),
    )
    verb_scores, noun_scores = (
        torch.from_numpy(scores["verb_output"]).float(),
        torch.from_numpy(scores["noun_output"]).float(),
    )
    metric = EpicActionMetrics()
    metric.update(verb_scores, noun_scores, *labels)
    computed = metric.compute()
    figures = {k: round(float(computed[k]), 4) if k in computed else None for k in METRIC_KEYS}
    return figures | {
        "not_applicable": {
            k: f"no {segment_group(k).replace('_', ' ')} segment" for k in METRIC_KEYS if k not in computed
        },
        "intervals": figure_intervals(verb_scores, noun_scores, labels, [s.video_id for s in segments]),
        "segments": len(segments),
        "split_segments": len(by_id),
    }


def figure_intervals(verb_scores, noun_scores, labels: tuple, videos: list[str]) -> dict[str, dict]:
    """The 95% interval of every figure (over its segments: all, tail, unseen), from a bootstrap over videos."""
    verb, noun, verb_tail, noun_tail, unseen = labels
    hits = top5_hits(verb_scores, noun_scores, verb, noun)
    groups = segment_groups(verb_tail, noun_tail, unseen)
    intervals = {}
    for key in METRIC_KEYS:
        kind, k, mask = key.split("_")[1], int(key[-1]), groups[segment_group(key)]
        if mask.any():
            chosen = [video for video, keep in zip(videos, mask.tolist()) if keep]
            intervals[key] = clustered_interval(hits[kind][mask][:, :k].any(-1).float().numpy(), chosen).as_dict()
    return intervals


def write_submission(scores: dict[str, np.ndarray], out: Path, sls_pt: int, sls_tl: int, sls_td: int) -> None:
    """The EPIC-KITCHENS-100 action-recognition challenge file: test.json inside a zip, written whole or not at all."""
    results = {
        str(nid): {
            "verb": {str(v): float(s) for v, s in enumerate(verbs)},
            "noun": {str(n): float(s) for n, s in enumerate(nouns)},
        }
        for nid, verbs, nouns in zip(scores["narration_id"], scores["verb_output"], scores["noun_output"])
    }
    payload = {
        "version": "0.2",
        "challenge": "action_recognition",
        "sls_pt": sls_pt,
        "sls_tl": sls_tl,
        "sls_td": sls_td,
        "results": results,
    }
    with atomic_output(out, "wb") as stream, zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("test.json", json.dumps(payload))
