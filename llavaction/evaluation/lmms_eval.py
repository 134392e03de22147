"""lmms-eval: the EK-100-MQA task folder that lmms-eval's own models run, and evaluation figures in its layout.

The task folder holds ek100_mqa.yaml (its prompt settings filled in), utils.py (llavaction's wording and scoring),
questions.jsonl, and per question either `videos/<narration_id>.mp4` or `frames/<narration_id>/*.jpg`. The MP4 holds
exactly the question's sampled frames at one frame a second: a model reading N frames uniformly (or one frame a
second) gets exactly the frames llavaction's evaluation shows, with nothing re-decoded from the source video.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import simplejpeg
import yaml
from tqdm import tqdm

from llavaction.benchmark.answers import chosen_option_texts
from llavaction.data.shards import frame_name, iter_samples, location_sizes, sample_meta, stored_frames
from llavaction.evaluation.options import QuestionOptions
from llavaction.model.families import DEFAULT_BACKBONE, Backbone
from llavaction.model.family import REGISTRY
from llavaction.prompts.tasks import can_show_priors
from llavaction.prompts.wording import with_pseudo_priors
from llavaction.utils.figures import upscale_nearest
from llavaction.utils.files import check_apart, check_output_folder, replaced_folder
from llavaction.utils.jsonl import read_jsonl, write_json, write_jsonl

TEMPLATE = Path(__file__).parent / "lmms_eval_task"
TASK = "ek100_mqa"
LMMS_EXPORT_COMMAND = "llavaction evaluate lmms-export"  # the marker of a task folder (utils.files.replaced_folder)


@dataclass(frozen=True)
class ExportSettings:
    """What the exported task asks, as `llavaction.cli.evaluate mqa` would ask it.

    Args:
        num_frames: frames a question shows (subsampled evenly from the shards' when fewer).
        time_instruction: state the clip's duration and frame count (the reference's sentence).
        frame_times: also list the frame times.
        prior_actions: show the two prior actions: 'none' (the paper's evaluation), 'oracle' or 'pseudo'.
        pseudo_predictions: predictions.jsonl whose answers stand for the prior actions ('pseudo').
        visual: 'video' (an MP4 per question, for video models) or 'frames' (JPEGs, for image-list models).
        backbone: the model family the task is run with (it decides the lmms-eval model named in the task).
        checkpoint: the checkpoint the task is run with, named in the task's lmms-eval command.
        engine: what the printed lmms-eval command runs the model with: 'hf' (the family's own lmms-eval model) or
            'vllm' (lmms-eval's vllm model serving the export; the Qwen families).
    """

    num_frames: int
    time_instruction: bool = False
    frame_times: bool = False
    prior_actions: Literal["none", "oracle", "pseudo"] = "none"
    pseudo_predictions: str | None = None
    visual: Literal["video", "frames"] = "video"
    backbone: Backbone = DEFAULT_BACKBONE
    checkpoint: str | None = None
    engine: Literal["hf", "vllm"] = "hf"

    def __post_init__(self):
        family = REGISTRY.get(self.backbone)
        if self.engine == "vllm" and family.lmms_eval_vllm is None:
            served = ", ".join(f.name for f in REGISTRY if f.lmms_eval_vllm is not None)
            raise ValueError(f"--engine vllm: vLLM does not serve {family.name} exports (it serves {served})")

    @property
    def model_folder(self) -> str:
        """What the lmms-eval command's pretrained= names: the checkpoint when it is a model folder or a hub id; a
        Lightning .ckpt is not one lmms-eval reads (EXPORTED_MODEL: the folder `llavaction export` writes from it)."""
        if self.checkpoint is None:
            return "CHECKPOINT"
        return EXPORTED_MODEL if self.checkpoint.endswith(".ckpt") else self.checkpoint

    def command(self, task_folder: Path, task: str = TASK) -> str:
        """The lmms-eval command that runs the task with this family's lmms-eval model (0.7.x)."""
        family = REGISTRY.get(self.backbone)
        name, arguments = family.lmms_eval.name, family.lmms_eval.arguments
        if self.engine == "vllm":
            name, arguments = "vllm", family.lmms_eval_vllm
        arguments = arguments.format(pretrained=self.model_folder, num_frames=self.num_frames)
        return (
            f"lmms-eval --model {name} --model_args {arguments} --tasks {task} --include_path {task_folder} "
            "--batch_size 1"
        )


EXPORTED_MODEL = "EXPORTED_MODEL"  # stands for the model folder a Lightning .ckpt is exported to


@dataclass(frozen=True, kw_only=True)
class LmmsExport(QuestionOptions):
    """An lmms-eval task folder of question files: the questions, llavaction's wording and scoring, and per question
    exactly the frames llavaction's evaluation shows.

    Args:
        questions: question files of data_prep.build_mqa.
        shards: their shard sets (directories or URLs), built from these question files.
        frames: instead of shards, frame stores holding the questions' clips (built from any question file).
        out: the task folder (for lmms-eval's --include_path): new, empty or an earlier export, written whole (an
            earlier export replaced only when the new one is complete); any other folder is refused.
        checkpoint: ask what this checkpoint was trained with (time instruction, frame times, frames); its backbone
            names the lmms-eval model in the task.
        visual: 'video' (an MP4 per question, for video models such as llava_vid) or 'frames' (its JPEG frames).
        backbone: the model family that runs the task (default: the checkpoint's, else LLaVA-Video).
        group: export each question file as its own task (named after its card: ek100_mqa_random_k2_gt), in one
            lmms-eval group of this name (a sweep's builds); default: one task of every question.
        engine: the printed lmms-eval command's engine: 'hf' (the family's lmms-eval model) or 'vllm' (lmms-eval's
            vllm model over the export; the Qwen families).
    """

    questions: list[Path]
    shards: list[str] | None = None
    frames: list[str] | None = None
    out: Path
    checkpoint: str | None = None
    visual: Literal["video", "frames"] = "video"
    backbone: Backbone | None = None
    group: str | None = None
    engine: Literal["hf", "vllm"] = "hf"

    def __post_init__(self):
        super().__post_init__()
        from llavaction.evaluation.questions import check_frames_source

        check_frames_source(self.shards, self.frames)
        if self.group is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", self.group):
            raise ValueError(f"--group: an lmms-eval name of lower-case letters, digits and '_', got {self.group!r}")


def export_lmms_task(run: LmmsExport) -> tuple[int, ExportSettings]:
    """The task folder of `run`, the questions checked against the shards first and asked as the checkpoint (when
    given) was trained; written into a temporary folder that replaces `run.out` when complete. Returns the question
    count and the settings used."""
    from llavaction.evaluation.checkpoints import LoadedCheckpoint, TrainedSettings, question_settings
    from llavaction.evaluation.questions import check_frames, question_cards, read_questions

    inputs = {"--questions": run.questions, "--shards": run.shards, "--frames": run.frames}
    inputs |= {"--checkpoint": run.checkpoint, "--pseudo_predictions": run.pseudo_predictions}
    check_apart({"--out": run.out}, inputs, folders=True)
    check_output_folder(run.out, LMMS_EXPORT_COMMAND)  # before any work; again when the folder is written
    if run.group is None:
        questions = read_questions(run.questions)
    else:  # each file its own task: the same segments may be asked in several
        questions = {name: records for path in run.questions for name, records in read_questions([path]).items()}
    cards = question_cards(run.questions)
    locations = check_frames(questions, run.shards, run.frames)
    loaded = LoadedCheckpoint.open(run.checkpoint) if run.checkpoint else None
    trained = loaded.settings if loaded is not None else TrainedSettings()
    asked = question_settings(trained, run, stored_frames(locations))
    backbone = run.backbone or (loaded.backbone if loaded is not None else DEFAULT_BACKBONE)
    settings = ExportSettings(
        num_frames=asked.num_frames,
        time_instruction=asked.time_instruction,
        frame_times=asked.frame_times,
        prior_actions=run.prior_actions,
        pseudo_predictions=run.pseudo_predictions,
        visual=run.visual,
        backbone=backbone,
        checkpoint=run.checkpoint,
        engine=run.engine,
    )
    with replaced_folder(run.out, LMMS_EXPORT_COMMAND) as folder:
        if run.group is None:
            return export_task(questions, locations, folder, settings, named=run.out, cards=cards), settings
        names = {path: task_name(path, cards[path]) for path in questions}
        if len(set(names.values())) < len(names):
            raise ValueError(f"two question files give one task name: {sorted(names.values())}")
        exported = 0
        for path, name in names.items():
            exported += export_task(
                {path: questions[path]}, locations, folder / name, settings, run.out, {path: cards[path]}, task=name
            )
        group = {"group": run.group, "task": list(names.values())}
        (folder / f"{run.group}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    return exported, settings


def task_name(path: str, card: dict | None) -> str:
    """A question file's lmms-eval task name: its card's build (ek100_mqa_random_k2_gt), else its file name."""
    base = card["name"].replace("EK-100-MQA", TASK) if card else f"{TASK}_{Path(path).stem}"
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")


MIN_VIDEO_SIDE = 64  # decord misreads H.264 videos narrower than this (the demo's 32 px frames)


def write_mp4(path: Path, frames: list, fps: int = 1) -> None:
    """H.264 at a near-lossless quality (CRF 12), one frame per sampled frame; frames smaller than MIN_VIDEO_SIDE are
    repeated to it by an integer factor (nearest neighbour: the same picture, which models resize anyway)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = upscale_nearest(frames, MIN_VIDEO_SIDE)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def export_task(
    questions: dict[str, list[dict]],
    shards: list[str],
    out: Path,
    settings: ExportSettings,
    named: Path | None = None,
    cards: dict[str, dict | None] | None = None,
    task: str = TASK,
) -> int:
    """Write the task folder of the question files' records ({file: records}, checked against the shards by
    evaluation.questions) into `out` (named: the folder's final name, for its lmms-eval command), with the question
    files' benchmark cards (name, version, digest, K) in benchmark.json and a comment line of the task YAML. Returns
    the question count."""
    from llavaction.data.stages import frame_indices

    wanted = {q["narration_id"]: q for records in questions.values() for q in records}
    pseudo = {}
    if settings.prior_actions == "pseudo":
        pseudo = chosen_option_texts(read_jsonl(settings.pseudo_predictions))
    records, sizes = {}, location_sizes(shards)
    progress = tqdm(total=len(wanted), desc="export", unit="question", mininterval=1)  # the store may hold more
    for sample in iter_samples(sizes, sizes):
        key = sample["__key__"]
        if key not in wanted:
            continue
        progress.update()
        meta = sample_meta(sample) | wanted[key]  # the question file's question over the stored frames
        chosen = frame_indices(meta["num_frames"], settings.num_frames)
        jpegs = [sample[frame_name(i)] for i in chosen]
        if settings.visual == "video":
            write_mp4(out / "videos" / f"{key}.mp4", [simplejpeg.decode_jpeg(j, colorspace="RGB") for j in jpegs])
        else:
            (out / "frames" / key).mkdir(parents=True, exist_ok=True)
            for index, jpeg in enumerate(jpegs):
                (out / "frames" / key / frame_name(index)).write_bytes(jpeg)
        records[key] = question_doc(meta, settings, pseudo)
    progress.close()
    missing = sorted(set(wanted) - set(records))
    if missing:
        raise ValueError(f"{len(missing)} questions have no frames in {', '.join(map(str, shards))}: {missing[:5]}")
    write_jsonl(out / "questions.jsonl", [records[k] for k in sorted(records)])
    shutil.copy(TEMPLATE / "utils.py", out / "utils.py")
    task_yaml = (TEMPLATE / f"{TASK}.yaml").read_text()
    specific = {
        "num_frames": settings.num_frames,
        "time_instruction": settings.time_instruction,
        "frame_times": settings.frame_times,
        "visual": settings.visual,
    }
    head, _, tail = task_yaml.partition("lmms_eval_specific_kwargs:")
    tail = tail[tail.index("metadata:") :]
    block = yaml.safe_dump({"lmms_eval_specific_kwargs": {"default": specific}}, sort_keys=False)
    run_with = f"# run with: {settings.command(named or out, task)}\n"
    pinned = [c for c in (cards or {}).values() if c is not None]
    built = "".join(f"# benchmark: {c['name']} v{c['version']} {c['questions_digest']}\n" for c in pinned)
    head = head.replace(f"task: {TASK}\n", f"task: {task}\n", 1)
    (out / f"{task}.yaml").write_text(run_with + built + head + block + tail)
    write_json(out / "benchmark.json", {"question_files": cards or {}})
    return len(records)


def question_doc(meta: dict, settings: ExportSettings, pseudo: dict[str, str]) -> dict:
    """A question as lmms-eval's documents carry it; prior actions shown (or not) as the settings ask."""
    show = settings.prior_actions != "none" and can_show_priors(meta, "mqa")
    if show and settings.prior_actions == "pseudo":
        meta = with_pseudo_priors(meta, pseudo)
    priors = meta.get("prior_actions") or []
    keep = (
        "narration_id",
        "options",
        "option_actions",
        "answer_index",
        "answer_letter",
        "clip_start_sec",
        "clip_stop_sec",
        "verb_class",
        "noun_class",
    )
    return {k: meta.get(k) for k in keep} | {"prior_actions": priors, "show_prior_actions": show}


def write_results_layout(out: Path, predictions: list[dict], results: dict) -> None:
    """The figures of `llavaction.cli.evaluate mqa` in lmms-eval's two-file layout."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    write_json(
        out / f"{stamp}_results.json",
        {
            "results": {
                TASK: {"alias": TASK, "mqa_accuracy,none": results["accuracy"], "mqa_accuracy_stderr,none": "N/A"}
            },
            "configs": {
                TASK: {
                    "task": TASK,
                    "output_type": "generate_until" if results["mode"] == "generate" else "multiple_choice",
                }
            },
            "n-samples": {TASK: {"original": results["count"], "effective": results["count"]}},
        },
    )
    write_jsonl(
        out / f"{stamp}_samples_{TASK}.jsonl",
        [
            {
                "doc_id": i,
                "doc": {"narration_id": r["narration_id"], "options": r["options"]},
                "target": r["answer_index"],
                "resps": [[r["generation"] if r["generation"] is not None else r["scores"]]],
                "filtered_resps": [r["rule_choice_index"]],
                "mqa_accuracy": float(r["correct"]),
            }
            for i, r in enumerate(predictions)
        ],
    )
