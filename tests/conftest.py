"""Shared fixtures: the real EPIC annotation excerpt in tests/fixtures, a small synthetic dataset made per session, its
questions and shards, and a tiny original-layout checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data_prep.build_mqa import main as build_mqa
from data_prep.extract_frames import extract
from data_prep.make_demo import make_demo
from llavaction.benchmark.card import copy_card_into, read_card
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import extract_args, extract_config, index_only_set, original_checkpoint_at

EPIC_DIR = Path(__file__).parent / "fixtures" / "epic-kitchens-100-annotations"


@pytest.fixture(scope="session")
def epic_dir() -> Path:
    return EPIC_DIR


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small synthetic EPIC-format dataset: 4 train and 2 validation videos of 20 s."""
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, seed=0, train_videos=4, val_videos=2, duration=20.0, fps=24, size=64)
    return out


@pytest.fixture(scope="session")
def demo_questions(demo_dir) -> dict[str, Path]:
    """MQA questions for both splits and the temporal task for train."""
    questions = demo_dir / "questions"
    for split in ("train", "validation"):
        build_mqa(
            [
                "--annotations",
                str(demo_dir / "annotations"),
                "--split",
                split,
                "--distractors",
                "annotations",
                "--seed",
                "0",
                "--out",
                str(questions / f"{split}_mqa.jsonl"),
                "--temporal-out",
                str(questions / f"{split}_temporal.jsonl"),
            ]
        )
    return {
        name: questions / f"{name}.jsonl"
        for name in ("train_mqa", "train_temporal", "validation_mqa", "validation_temporal")
    }


@pytest.fixture(scope="session")
def demo_shards(demo_dir, demo_questions, tmp_path_factory) -> dict[str, Path]:
    """8-frame 32 px shards of the demo questions."""
    root = tmp_path_factory.mktemp("shards")
    shards = {}
    for name in ("train_mqa", "validation_mqa", "train_temporal"):
        extract(read_jsonl(demo_questions[name]), root / name, extract_config(demo_dir / "videos"))
        if (card := read_card(demo_questions[name])) is not None:  # as the extract_frames command does
            copy_card_into(root / name, card)
        shards[name] = root / name
    return shards


@pytest.fixture(scope="session")
def demo_store(demo_dir, demo_questions, demo_shards, tmp_path_factory) -> Path:
    """The demo's one frame store as `make demo` builds it: the training questions' clips, the validation questions'
    added (extract_frames --add)."""
    from data_prep.extract_frames import main as extract_frames

    store = tmp_path_factory.mktemp("store") / "mqa"
    shutil.copytree(demo_shards["train_mqa"], store)
    args = extract_args(demo_questions["validation_mqa"], demo_dir / "videos", store, "--num-frames", "8", "--add")
    assert extract_frames(args) == 0
    return store


@pytest.fixture(scope="session")
def original_checkpoint(demo_dir, tmp_path_factory) -> Path:
    """A random-init tiny model in the original checkpoint layout, with the demo tokenizer."""
    return original_checkpoint_at(demo_dir, tmp_path_factory.mktemp("ckpt"))


def pytest_addoption(parser):
    parser.addoption("--vllm-python", default=None, help="a Python with vLLM for the vllm tests (make test-vllm)")


@pytest.fixture(scope="session")
def vllm_python(request) -> str:
    """The Python of the vLLM environment (make test-vllm gives it)."""
    python = request.config.getoption("--vllm-python")
    if python is None:
        pytest.skip("no --vllm-python: make test-vllm builds the vLLM environment and gives it")
    return str(Path(python).absolute())  # not resolved: a venv's python is a link its folder gives meaning to


@pytest.fixture(scope="session")
def uneven_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_only")
    return [
        index_only_set(root / "a", [8, 8, 8, 5], "a"),  # a last shard smaller than the rest
        index_only_set(root / "b", [7, 3], "b"),
        index_only_set(root / "replay", [4, 2], "r", conversations=lambda n: n % 3 + 1),
    ]
