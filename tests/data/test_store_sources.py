"""Training and validation over one frame store holding other clips too (the demo's: training clips, validation clips
added): the plan is the one of the question file's own shards, every item once at world sizes 1-3 with 0 and 2
workers, a resumed epoch continues the same batches, and a loader worker reads only the questions it serves."""

import json

import pytest

from llavaction.data import store as store_module
from llavaction.data.options import TaskSource
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import datamodule, eval_keys


def over_store(demo_dir, demo_shards, demo_store, demo_questions, **overrides):
    """The demo's DataModule as experiments/demo.yaml configures it: training and validation question files asked
    over the one store."""
    train = [
        TaskSource(frames=str(demo_store), questions=str(demo_questions["train_mqa"]), task="mqa", weight="size"),
    ]
    overrides = dict(samples_per_epoch=None) | overrides
    return datamodule(
        demo_dir,
        demo_shards,
        train=train,
        val=[str(demo_store)],
        questions=[str(demo_questions["validation_mqa"])],
        **overrides,
    )


def train_keys(module, rank: int = 0, world: int = 1) -> list[list[str]]:
    module._world = lambda: (rank, world)
    return [[k for k, pad in zip(b.keys, b.is_padding) if not pad] for b in module.train_dataloader()]


def test_the_store_changes_no_batch(demo_dir, demo_shards, demo_store, demo_questions):
    """The same batches as the file's own shards, though the store holds the validation clips as well."""
    module = over_store(demo_dir, demo_shards, demo_store, demo_questions)
    own = datamodule(
        demo_dir, demo_shards, train=[TaskSource(str(demo_shards["train_mqa"]), "mqa", "size")], samples_per_epoch=None
    )
    module.setup("fit")
    own.setup("fit")
    ours, theirs = list(module.train_dataloader()), list(own.train_dataloader())
    assert len(ours) == len(theirs) > 1
    for a, b in zip(ours, theirs):
        assert a.keys == b.keys and a.input_ids.equal(b.input_ids) and a.frames.equal(b.frames)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_item_once_at_any_world_size(demo_dir, demo_shards, demo_store, demo_questions, world, workers):
    module = over_store(demo_dir, demo_shards, demo_store, demo_questions, num_workers=workers)
    module.setup("fit")
    seen = [key for rank in range(world) for batch in train_keys(module, rank, world) for key in batch]
    assert sorted(seen) == sorted(q["narration_id"] for q in read_jsonl(demo_questions["train_mqa"]))
    asked, batch_counts = eval_keys(module, world, workers)
    assert sorted(asked) == sorted(q["narration_id"] for q in read_jsonl(demo_questions["validation_mqa"]))
    assert len(set(batch_counts)) == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_continues_the_same_batches(demo_dir, demo_shards, demo_store, demo_questions, workers):
    module = over_store(demo_dir, demo_shards, demo_store, demo_questions, num_workers=workers, batch_size=2)
    module.setup("fit")
    loader = module.train_dataloader()
    loader.epoch = lambda: 1
    full = [[m["narration_id"] for m in b.meta] for b in loader]
    assert len(full) >= 5
    for consumed in (1, 3):
        loader.load_state_dict({"epoch": 1, "batches": consumed})
        assert [[m["narration_id"] for m in b.meta] for b in loader] == full[consumed:]


def test_a_worker_reads_only_the_questions_it_serves(demo_dir, demo_shards, demo_store, demo_questions, monkeypatch):
    read = []
    real = store_module.read_jsonl_at

    def counted(path, lines):
        read.append(set(lines))
        return real(path, lines)

    monkeypatch.setattr(store_module, "read_jsonl_at", counted)
    module = over_store(demo_dir, demo_shards, demo_store, demo_questions)
    module.setup("fit")
    joined = module.joined(module.train_sources[0])
    assert not hasattr(joined, "asked")  # the DataModule keeps offsets, digests and words, not the questions
    served = [set(key for batch in train_keys(module, rank, 2) for key in batch) for rank in (0, 1)]
    assert read == served and not served[0] & served[1]  # each rank's (single) worker read its own questions only


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(path="s", frames="f", questions="q"), "names a shard set \\(path\\) or a frame store"),
        (dict(task="mqa"), "names a shard set \\(path\\) or a frame store"),
        (dict(path="s", questions="q"), "name it `frames:`"),
        (dict(frames="f"), "give `questions:`"),
        (dict(frames="f", questions="q", task="qa"), "goes with a task of mqa, narration, temporal"),
    ],
)
def test_a_source_names_its_frames_one_way(fields, message):
    with pytest.raises(ValueError, match=message):
        TaskSource(**fields)


def test_a_question_file_rewritten_during_the_run_is_an_error(demo_questions, demo_store, tmp_path):
    from llavaction.data.store import StoreQuestions

    path = tmp_path / "q.jsonl"
    path.write_bytes(demo_questions["train_mqa"].read_bytes())
    questions = StoreQuestions(str(path))
    keys = set(list(questions.at)[:3])
    assert set(questions.served(keys).asked) == keys
    records = read_jsonl(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(records)))
    with pytest.raises(ValueError, match="changed while the run reads it"):
        questions.served(keys)


def test_a_question_file_edited_in_place_between_epochs_is_refused(demo_questions, tmp_path):
    """An answer changed in place keeps every line's length and key: the next epoch's readers refuse the file, naming
    it (its digest is the card's, or the one it had when the run began)."""
    from llavaction.data.store import StoreQuestions

    path = tmp_path / "q.jsonl"
    path.write_bytes(demo_questions["train_mqa"].read_bytes())
    questions = StoreQuestions(str(path))
    keys = set(questions.at)
    epoch_one = questions.served(keys).asked
    text = path.read_text()
    first = json.loads(text.splitlines()[0])
    edited = f'"answer_index": {(first["answer_index"] + 1) % 5}'
    path.write_text(text.replace(f'"answer_index": {first["answer_index"]}', edited, 1))
    assert len(path.read_bytes()) == len(demo_questions["train_mqa"].read_bytes())
    with pytest.raises(ValueError, match=rf"^{path}: changed while the run reads it \(its digest is no longer"):
        questions.served(keys)
    assert epoch_one[first["narration_id"]]["answer_index"] == first["answer_index"]
