"""The DataModule: mixtures, every validation question once at any world size, bad samples, prior actions, resume."""

import dataclasses
import json
import logging
from collections import Counter

import pytest
import torch
import webdataset as wds

from llavaction.data.options import LoaderOptions, PriorActionOptions, TaskSource
from llavaction.data.shards import read_index, read_sizes
from llavaction.data.stages import BadSample, decide, frame_indices
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import datamodule, eval_keys


def test_ranks_share_an_epoch_without_overlap(demo_dir, demo_shards):
    train = [TaskSource(str(demo_shards["train_mqa"]), "mqa", "size")]
    dm = datamodule(demo_dir, demo_shards, train=train, samples_per_epoch=None)
    seen = {}
    for rank in (0, 1):
        dm._world = lambda rank=rank: (rank, 2)
        batches = list(dm.train_dataloader())
        seen[rank] = [m["narration_id"] for b in batches for m, pad in zip(b.meta, b.is_padding) if not pad]
    assert len(read_sizes(demo_shards["train_mqa"])) >= 2
    assert not set(seen[0]) & set(seen[1]) and abs(len(seen[0]) - len(seen[1])) <= 1
    every = [entry["key"] for entries in read_index(demo_shards["train_mqa"]).values() for entry in entries]
    assert sorted(seen[0] + seen[1]) == sorted(every)


LOADER_FIELDS = {f.name for f in dataclasses.fields(LoaderOptions)}


def test_training_batches(demo_dir, demo_shards):
    dm = datamodule(demo_dir, demo_shards)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 == dm.train_batches() == len(dm.train_dataloader())
    batch = batches[0]
    assert batch.frames.dtype == torch.uint8 and batch.frames.shape == (4, 4, 32, 32, 3)
    assert (batch.input_ids == IMAGE_TOKEN_INDEX).sum(1).tolist() == [1, 1, 1, 1]
    assert ((batch.labels != IGNORE_INDEX).sum(1) > 0).all()
    assert (batch.attention_mask.sum(1) == (batch.input_ids != dm.tokenizer.pad_token_id).sum(1)).all()


def test_mixture_follows_weights_and_is_reproducible(demo_dir, demo_shards):
    train = [
        TaskSource(str(demo_shards["train_mqa"]), "mqa", 3.0),
        TaskSource(str(demo_shards["train_temporal"]), "temporal", 1.0),
    ]
    dm = datamodule(demo_dir, demo_shards, train=train, samples_per_epoch=400)
    dm.setup("fit")
    runs = [[(t, m["narration_id"]) for b in dm.train_dataloader() for t, m in zip(b.tasks, b.meta)] for _ in range(2)]
    assert runs[0] == runs[1]
    counts = Counter(t for t, _ in runs[0])
    assert 0.67 < counts["mqa"] / 400 < 0.83


def test_persistent_eval_workers_serve_every_validation_run(demo_dir, demo_shards):
    dm = datamodule(demo_dir, demo_shards, num_workers=2)
    loader = dm.val_dataloader()
    assert loader.persistent_workers
    runs = [
        sorted(m["narration_id"] for b in loader for m, pad in zip(b.meta, b.is_padding) if not pad) for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 8


@pytest.mark.parametrize("world, workers", [(1, 0), (2, 0), (3, 0), (2, 2)])
def test_every_question_once_and_equal_batches(demo_dir, demo_shards, demo_questions, world, workers):
    dm = datamodule(demo_dir, demo_shards)
    ids, batch_counts = eval_keys(dm, world, workers)
    expected = [q["narration_id"] for q in read_jsonl(demo_questions["validation_mqa"])]
    assert sorted(ids) == sorted(expected)
    assert len(set(batch_counts)) == 1


def write_bad_shard(path, good_dir, truncate=False):
    """A shard whose first sample, BROKEN_1, lacks a frame (or, with truncate, has a truncated one)."""
    path.mkdir()
    good = next(iter(wds.WebDataset(str(next(good_dir.glob("shard-*.tar"))), shardshuffle=False)))
    meta = json.loads(good["json"])
    bad = {k: v for k, v in good.items() if not k.startswith("__") and k != "003.jpg"}
    if truncate:
        bad["003.jpg"] = good["003.jpg"][: len(good["003.jpg"]) // 2]
    with wds.TarWriter(str(path / "shard-000000.tar")) as writer:
        writer.write({"__key__": "BROKEN_1", **bad})
        writer.write({"__key__": meta["narration_id"], **{k: v for k, v in good.items() if not k.startswith("__")}})
    (path / "sizes.json").write_text(json.dumps({"shard-000000.tar": 2}))


@pytest.mark.parametrize("truncate", [False, True], ids=["missing-frame", "truncated-frame"])
def test_bad_training_sample_is_skipped_and_counted(demo_dir, demo_shards, tmp_path, caplog, truncate):
    write_bad_shard(tmp_path / "bad", demo_shards["train_mqa"], truncate=truncate)
    dm = datamodule(
        demo_dir,
        demo_shards,
        train=[TaskSource(str(tmp_path / "bad"), "mqa")],
        samples_per_epoch=8,
        num_frames=8,
        shuffle_buffer=1,
    )
    with caplog.at_level(logging.WARNING):
        batches = list(dm.train_dataloader())
    real = [m["narration_id"] for b in batches for m, pad in zip(b.meta, b.is_padding) if not pad]
    assert "BROKEN_1" not in real and len(real) == 4  # 8 planned rows: 4 of the good sample, 4 skips made padding
    assert all(b.input_ids.shape[0] == 4 for b in batches)  # a skipped row is padding: batches keep their size
    assert any("BROKEN_1" in r.message and "skipped so far" in r.message for r in caplog.records)
    # the frame headers are checked before collation: both cases are bad samples (train/skipped_samples/bad_sample)
    assert sum(b.skipped_samples["bad_sample"] for b in batches) == 4


@pytest.mark.parametrize("truncate", [False, True], ids=["missing-frame", "truncated-frame"])
def test_bad_evaluation_sample_is_an_error(demo_dir, demo_shards, tmp_path, truncate):
    write_bad_shard(tmp_path / "bad", demo_shards["validation_mqa"], truncate=truncate)
    dm = datamodule(demo_dir, demo_shards, val=[str(tmp_path / "bad")], num_frames=8)
    with pytest.raises(BadSample, match="BROKEN_1"):
        list(dm.val_dataloader())


def test_setup_errors(demo_dir, demo_shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_prep.extract_frames"):
        datamodule(demo_dir, demo_shards, val=[str(tmp_path / "nowhere")]).prepare_data()
    with pytest.raises(ValueError, match="hold 8 frames per sample, 16 asked for"):
        datamodule(demo_dir, demo_shards, num_frames=16).setup("fit")
    with pytest.raises(ValueError, match="frames"):
        frame_indices(8, 9)
    assert frame_indices(16, 4) == [2, 6, 10, 14]


def test_description_task_uses_the_same_shards(demo_dir, demo_shards, demo_questions, tmp_path):
    ids = [q["narration_id"] for q in read_jsonl(demo_questions["train_mqa"])[:3]]
    path = tmp_path / "descriptions.jsonl"
    path.write_text(
        "".join(
            json.dumps({"narration_id": i, "question": "Describe the object's motion.", "answer": f"it moves ({i})"})
            + "\n"
            for i in ids
        )
    )
    train = [TaskSource(str(demo_shards["train_mqa"]), "qa", descriptions=str(path))]
    dm = datamodule(demo_dir, demo_shards, train=train, samples_per_epoch=8)
    for batch in dm.train_dataloader():
        for row, meta in enumerate(batch.meta):
            assert meta["narration_id"] in ids and batch.tasks[row] == "qa"
            answer = [t for t, label in zip(batch.input_ids[row].tolist(), batch.labels[row].tolist()) if label >= 0]
            assert dm.tokenizer.decode(answer) == f"it moves ({meta['narration_id']})<|im_end|>"
    with pytest.raises(ValueError, match="descriptions file goes with task 'qa'"):
        TaskSource(str(demo_shards["train_mqa"]), "mqa", descriptions=str(path))


def test_prior_actions_oracle_and_pseudo(demo_dir, demo_shards, demo_questions, tmp_path):
    questions = read_jsonl(demo_questions["validation_mqa"])
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(
            json.dumps(
                {"narration_id": q["narration_id"], "options": ["PSEUDO " + q["narration_id"]], "chosen_index": 0}
            )
            + "\n"
            for q in questions
        )
    )
    texts, metas = {}, {}
    for mode, extra in (("none", {}), ("oracle", {}), ("pseudo", {"pseudo_predictions": str(predictions)})):
        dm = datamodule(demo_dir, demo_shards, prior_actions=PriorActionOptions(evaluation=mode, **extra))
        batch = next(iter(dm.val_dataloader()))
        texts[mode] = [dm.tokenizer.decode([t for t in row.tolist() if t >= 0]) for row in batch.input_ids]
        metas[mode] = batch.meta
    with_priors = [i for i, m in enumerate(metas["oracle"]) if m.get("prior_actions")]
    assert with_priors
    for i in with_priors:
        first = metas["oracle"][i]["prior_actions"][0]
        assert "seconds ago, you started an action" not in texts["none"][i]  # the reference's evaluation
        assert f"seconds ago, you started an action {first['text']}." in texts["oracle"][i]
        assert f"you started an action PSEUDO {first['narration_id']}." in texts["pseudo"][i]
    with pytest.raises(ValueError, match="pseudo_predictions"):
        PriorActionOptions(evaluation="pseudo")


def test_prior_decision_depends_only_on_seed_epoch_and_sample():
    keys = [f"P01_01_{i}" for i in range(2000)]
    once = {k: decide(0, 1, k, "priors", 0.3) for k in keys}
    assert {k: decide(0, 1, k, "priors", 0.3) for k in reversed(keys)} == once
    assert 0.26 < sum(once.values()) / len(keys) < 0.34
    assert once != {k: decide(0, 2, k, "priors", 0.3) for k in keys}


def test_prior_actions_checked_on_mqa_sources_only(demo_dir, demo_shards):
    priors = PriorActionOptions(train_probability=0.3)
    train = [
        TaskSource(str(demo_shards["train_mqa"]), "mqa"),
        TaskSource(str(demo_shards["train_temporal"]), "temporal"),
    ]
    datamodule(demo_dir, demo_shards, train=train, prior_actions=priors).setup("fit")
    with pytest.raises(ValueError, match="carry no prior_actions"):
        datamodule(
            demo_dir, demo_shards, train=[TaskSource(str(demo_shards["train_temporal"]), "mqa")], prior_actions=priors
        ).setup("fit")


def test_every_epoch_sees_other_data_without_reloading_the_loader(demo_dir, demo_shards):
    dm = datamodule(demo_dir, demo_shards, samples_per_epoch=32)
    loader = dm.train_dataloader()
    epochs = {}
    for epoch in (0, 1):
        loader.epoch = lambda epoch=epoch: epoch
        epochs[epoch] = [m["narration_id"] for b in loader for m in b.meta]
    assert len(epochs[0]) == len(epochs[1]) == 32 and epochs[0] != epochs[1]
    loader.epoch = lambda: 0
    assert [m["narration_id"] for b in loader for m in b.meta] == epochs[0]  # reproducible


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_epoch_continues_the_same_batches(demo_dir, demo_shards, workers):
    """A loader restored after k batches yields exactly the epoch's batches k, k+1, ... (any worker count)."""
    dm = datamodule(demo_dir, demo_shards, samples_per_epoch=40, num_workers=workers)
    loader = dm.train_dataloader()
    loader.epoch = lambda: 3
    full = [[m["narration_id"] for m in b.meta] for b in loader]
    assert len(full) == 10 or (workers == 2 and len(full) == 10)
    for consumed in (1, 3, 4):
        loader.load_state_dict({"epoch": 3, "batches": consumed})
        rest = [[m["narration_id"] for m in b.meta] for b in loader]
        assert rest == full[consumed:]
    loader.load_state_dict({"epoch": 2, "batches": 5})  # a state of another epoch does not apply
    assert [[m["narration_id"] for m in b.meta] for b in loader] == full


def test_length_grouped_batches_pad_less(demo_dir, demo_shards):
    train = [
        TaskSource(str(demo_shards["train_mqa"]), "mqa"),
        TaskSource(str(demo_shards["train_temporal"]), "temporal"),
    ]

    def padding(**extra):
        dm = datamodule(demo_dir, demo_shards, train=train, samples_per_epoch=96, **extra)
        batches = list(dm.train_dataloader())
        assert len(batches) == 24 and all(b.input_ids.shape[0] == 4 for b in batches)
        return sum(int((b.attention_mask == 0).sum()) for b in batches)

    assert padding(length_group_window=6) < padding()
