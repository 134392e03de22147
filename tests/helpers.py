"""The tests' shared helpers (no test module imports another): the repository root, demo data settings, command
lines of fits and evaluations, callbacks a fit in a subprocess runs, and comparisons of runs."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# A replayed video's conversation: two answered exchanges and a trailing unanswered question.
CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat moves first?"},
    {"from": "gpt", "value": "The plate."},
    {"from": "human", "value": "And then?"},
    {"from": "gpt", "value": "The cup grows."},
    {"from": "human", "value": "Unanswered?"},
]


# ---- data ----------------------------------------------------------------------------------------------------------


def index_only_set(path, shard_sizes, prefix, conversations=None):
    """A shard set of empty shards with sizes.json and index.json only (planning reads nothing else). Question lines
    run backwards through the shards, so question-file order differs from shard order."""
    path.mkdir(parents=True)
    sizes, index, count = {}, {}, sum(shard_sizes)
    number = 0
    for shard, size in enumerate(shard_sizes):
        name = f"shard-{shard:06d}.tar"
        (path / name).write_bytes(b"")
        sizes[name] = size
        index[name] = []
        for _ in range(size):
            many = conversations(number) if conversations else None
            index[name].append(
                {
                    "key": f"{prefix}{number}",
                    "line": count - 1 - number,
                    "conversations": many,
                    "words": [number % 7 + i for i in range(many or 1)],
                    "digest": "0" * 16,
                }
            )
            number += 1
    (path / "sizes.json").write_text(json.dumps(sizes))
    (path / "index.json").write_text(json.dumps(index))
    return str(path)


def planner_for(sets, world, workers, batch=3, quotas=None, **extra):
    """An EpochPlanner over index-only shard sets: seed 0, shuffle buffer 4, 2 open shards unless given."""
    from llavaction.data.epochs import EpochPlanner
    from llavaction.data.sources import source_items

    items = [source_items(s) for s in sets]
    return EpochPlanner(
        items,
        quotas or [None] * len(items),
        seed=0,
        batch_size=batch,
        world_size=world,
        num_workers=workers,
        shuffle_buffer=extra.pop("shuffle_buffer", 4),
        open_shards=extra.pop("open_shards", 2),
        **extra,
    )


def planned_rows(planner, epoch):
    """(rank, worker, batch number, source, key, padding) of every planned row, rank by rank."""
    out = []
    for plan in planner.slots(epoch):
        for number, batch in zip(planner.worker_batches(plan.worker), plan.batches):
            for planned in batch:
                key = planner.key_of(plan, planned)
                out.append((plan.rank, plan.worker, number, planned.source, key, planned.padding))
    return out


def extract_config(videos, **overrides):
    """extract_frames settings of the tests' shards: 8 frames of 32 px, JPEG q90, 8 samples a shard, raw layout."""
    from data_prep.extract_frames import ExtractConfig

    values = dict(
        videos=str(videos),
        layout="raw",
        num_frames=8,
        size=32,
        resize="squash",
        quality=90,
        chunk_seconds=15.0,
        shard_size=8,
    )
    return ExtractConfig(**(values | overrides))


def extract_args(questions, videos, out, *extra) -> list[str]:
    """The extract_frames command line of the tests: 4 frames of 32 px, one worker."""
    return [
        "--questions",
        str(questions),
        "--videos",
        str(videos),
        "--num-frames",
        "4",
        "--size",
        "32",
        "--workers",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def datamodule(demo_dir, demo_shards, train=None, **overrides):
    """A DataModule over the demo shards; loader fields may be given flat (batch_size=...)."""
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.data.options import LoaderOptions, TaskSource
    from llavaction.prompts.formats import SplicedVideo

    train = train or [
        TaskSource(str(demo_shards["train_mqa"]), "mqa", 1.0),
        TaskSource(str(demo_shards["train_mqa"]), "narration", 1.0),
    ]
    loader = dict(batch_size=4, eval_batch_size=3, num_workers=0, samples_per_epoch=16, shuffle_buffer=10)
    fields = {f.name for f in dataclasses.fields(LoaderOptions)}
    loader |= {k: overrides.pop(k) for k in list(overrides) if k in fields}
    kwargs = dict(
        train=train,
        val=[str(demo_shards["validation_mqa"])],
        tokenizer=str(demo_dir / "tokenizer"),
        chat_format=SplicedVideo(tokens_per_frame=20).as_dict(),
        num_frames=4,
        max_length=512,
        loader=LoaderOptions(**loader),
    )
    return EpicDataModule(**(kwargs | overrides))


def eval_keys(dm, world: int, workers: int) -> tuple[list[str], list[int]]:
    """The keys of the real rows a DataModule's validation loaders give at a world size and worker count (rank by
    rank), and each rank's batch count; padding rows carry no answer."""
    ids, batch_counts = [], []
    for rank in range(world):
        dm.trainer = None
        dm._world = lambda rank=rank: (rank, world)
        dm.loader = dataclasses.replace(dm.loader, num_workers=workers)
        loader = dm.val_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader.dataset)
        batch_counts.append(len(batches))
        for b in batches:
            real = ~b.is_padding
            ids += [m["narration_id"] for m, r in zip(b.meta, real) if r]
            assert (b.answer_index[~real] == -1).all()
    return ids, batch_counts


def write_bucket(root: Path, videos: Path) -> tuple[Path, Path]:
    """Two files of one bucket sharing ids, as LLaVA-Video-178K's caption and QA files do."""
    bucket = root / "0_30_s_demo"
    bucket.mkdir(parents=True)
    clips = ["D01/D01_101.MP4", "D02/D02_101.MP4"]
    captions = [
        {"id": f"v{i}", "video": clips[i % 2], "data_source": "0_30_s_demo", "conversations": CONVERSATION[:2]}
        for i in range(4)
    ]
    qa = [{"id": f"v{i}", "video": clips[i % 2], "conversations": CONVERSATION} for i in range(4)]
    qa.append({"id": "gone", "video": "D01/missing.MP4", "conversations": CONVERSATION[:2]})
    (bucket / "0_30_s_demo_cap_processed.json").write_text(json.dumps(captions))
    (bucket / "0_30_s_demo_oe_qa_processed.json").write_text(json.dumps(qa))
    for clip in clips:  # the reference layout: <root>/<data_source>/<video>
        (bucket / clip).parent.mkdir(parents=True, exist_ok=True)
        (bucket / clip).write_bytes((videos / clip).read_bytes())
    return bucket / "0_30_s_demo_cap_processed.json", bucket / "0_30_s_demo_oe_qa_processed.json"


def truncated_copy(source: Path, target: Path, keep_samples: int) -> None:
    """A copy of a shard set whose first shard ends cleanly after keep_samples samples (a tar cut at a sample
    boundary), while sizes.json still lists the full count."""
    shutil.copytree(source, target)
    first = sorted(target.glob("shard-*.tar"))[0]
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        keys = []
        kept = []
        for member in members:
            key = member.name.split(".")[0]
            if key not in keys:
                keys.append(key)
            if len(keys) > keep_samples:
                break
            kept.append((member, tar.extractfile(member).read()))
    with tarfile.open(first, "w") as tar:
        for member, data in kept:
            tar.addfile(member, io.BytesIO(data))


# A question record of the prompt tests: options, an answer, a window and two prior actions.
RECORD = {
    "narration_id": "P01_01_7",
    "options": ["take plate", "open drawer", "wash cup", "put pan", "cut onion"],
    "answer_index": 1,
    "narration": "open the drawer",
    "start_sec": 12.0,
    "stop_sec": 13.5,
    "clip_start_sec": 10.61,
    "clip_stop_sec": 13.0,
    "answer": "0.5, 2.0",
    "prior_actions": [
        {"narration_id": "P01_01_5", "text": "take plate", "offset_sec": 6.25},
        {"narration_id": "P01_01_6", "text": "put plate", "offset_sec": 3.0},
    ],
}


def make_batch(rows: int, frames: int = 4, size: int = 32, length: int = 4, **fields):
    """A Batch of `rows` rows for tests of its consumers: blank frames, all-real tokens, no labels, no classes;
    `fields` replace any of them."""
    from llavaction.data.batch import Batch
    from llavaction.prompts.formats import ClipTiming

    minus_one = torch.full((rows,), -1)
    no = torch.zeros(rows, dtype=torch.bool)
    values = dict(
        input_ids=torch.zeros(rows, length, dtype=torch.long),
        labels=torch.full((rows, length), -100),
        attention_mask=torch.ones(rows, length, dtype=torch.long),
        frames=torch.zeros(rows, frames, size, size, 3, dtype=torch.uint8),
        is_padding=no,
        truncated=no,
        answer_index=minus_one,
        num_options=torch.zeros(rows, dtype=torch.long),
        verb_class=minus_one,
        noun_class=minus_one,
        action_index=minus_one,
        verb_tail=no,
        noun_tail=no,
        unseen=no,
        meta=[{} for _ in range(rows)],
        clips=[ClipTiming.even(frames, 1.0)] * rows,
    )
    return Batch(**(values | fields))


def write_checkpoint(path, state: dict, processed: int = 0, last_batch: bool = False) -> str:
    """A checkpoint file holding only the fit loop's state Lightning writes around a training loader's state."""
    counts = {"ready": state["batches"], "started": state["batches"], "processed": state["batches"]}
    fit = {
        "state_dict": {"combined_loader": [state]},
        "epoch_loop.batch_progress": {
            "total": counts | {"completed": state["batches"] - 1},
            "current": counts | {"completed": state["batches"] - 1},
            "is_last_batch": last_batch,
        },
        "epoch_progress": {
            key: {"ready": 1, "started": 1, "processed": processed, "completed": 0} for key in ("total", "current")
        },
    }
    torch.save({"loops": {"fit_loop": fit}}, path)
    return str(path)


def loader_state(dm, world: int, batches: int, accumulate: int) -> dict:
    """What a training loader of `dm` at this world size records after `batches` batches of epoch 0."""
    dm._world = lambda: (0, world)
    loader = dm.train_dataloader()
    loader.position = lambda: {"epoch": 0, "batches": batches, "accumulate": accumulate}
    return loader.state_dict()


# ---- fits ----------------------------------------------------------------------------------------------------------


def original_checkpoint_at(demo_dir, folder, seed: int = 0):
    """A random-init tiny model in the original checkpoint layout, with the demo tokenizer."""
    from transformers import AutoTokenizer

    from llavaction.model.llava_video import LlavaVideoModel, preset

    torch.manual_seed(seed)
    LlavaVideoModel(preset("tiny")).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(demo_dir / "tokenizer")).save_pretrained(folder)
    return folder


def run_mqa(ckpt, demo_questions, demo_shards, out, *extra, questions=None, frames_as="--shards"):
    """`llavaction evaluate mqa` of the demo validation questions (or `questions`) over the validation shards (as
    `--frames` too) in a subprocess: (results, predictions)."""
    args = [
        sys.executable,
        "-m",
        "llavaction.cli.evaluate",
        "mqa",
        "--questions",
        str(questions or demo_questions["validation_mqa"]),
        frames_as,
        str(demo_shards["validation_mqa"]),
        "--checkpoint",
        str(ckpt),
        "--batch-size",
        "3",
        "--num-workers",
        "0",
        "--max-new-tokens",
        "12",
        "--out",
        str(out),
        *extra,
    ]
    result = subprocess.run(
        args, cwd=out.parent, capture_output=True, text=True, timeout=600, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), [
        json.loads(line) for line in open(out / "predictions.jsonl")
    ]


def hub_cache(root: Path, checkpoint: Path, repo: str, revision: str) -> Path:
    """A model-hub cache laid out as huggingface_hub writes it: models--org--name/{refs/main, snapshots/<rev>/}."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in checkpoint.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    return root


# ---- processes and command lines -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_exit(capsys, call) -> str:
    """Run a CLI's main in this process: exit status 2 and one error line, the last on stderr (after any progress
    bars), which is returned."""
    try:
        code = call()
    except SystemExit as exit_info:  # a parser's one-line error
        code = exit_info.code
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in lines, lines
    return errors[0]


def one_line_error(capsys) -> str:
    """The command's error: one line `error: ...` at the end of its stderr, no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "\n".join(err), err
    return errors[0]
