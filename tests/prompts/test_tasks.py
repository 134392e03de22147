"""Tasks as plug-ins: the built-ins are the registry, and README's "Adding a task", followed: a toy task registered
from here is trained from the demo's shards through the same data code as the built-ins."""

import typing

import pytest

from llavaction.data.options import TaskSource
from llavaction.prompts.tasks import TASKS, SampleTask, Task, answer_text, prompt_turns
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.constants import IGNORE_INDEX
from tests.helpers import RECORD, datamodule


def test_the_task_choices_are_the_registry():
    assert typing.get_args(Task) == TASKS.names() == ("mqa", "narration", "temporal", "qa")
    with pytest.raises(ValueError, match="registered twice"):
        TASKS.register(SampleTask("mqa", "another", lambda r, p: "", lambda r: ""))
    with pytest.raises(ValueError, match="unknown task 'nope'; expected one of mqa, narration"):
        answer_text(RECORD, "nope")


# ---- README "Adding a task": a question, an answer, the fields they read ----
VERB_QUESTION = "Which verb names what you are doing? Answer with the verb only."


@pytest.fixture
def verb_task():
    task = TASKS.register(
        SampleTask(
            name="verb",
            title="the action's verb",
            question=lambda record, use_priors: VERB_QUESTION,
            answer=lambda record: record["verb_text"],
            fields=("verb_text",),
        )
    )
    yield task
    TASKS.unregister("verb")


def test_a_task_registered_from_outside_is_trained_from_the_shards(verb_task, demo_dir, demo_shards):
    assert prompt_turns(RECORD | {"verb_text": "open"}, "verb", 8, PromptOptions()) == [(VERB_QUESTION, "open")]
    dm = datamodule(demo_dir, demo_shards, train=[TaskSource(str(demo_shards["train_mqa"]), "verb", 1.0)])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch.tasks) == {"verb"}
    for row, meta in enumerate(batch.meta):
        supervised = batch.labels[row][batch.labels[row] != IGNORE_INDEX]
        assert dm.tokenizer.decode(supervised).startswith(meta["verb_text"])


def test_a_source_without_the_fields_its_task_reads_is_one_line(demo_dir, demo_shards):
    TASKS.register(SampleTask("tagged", "needs a tag", lambda r, p: "?", lambda r: r["tag"], fields=("tag",)))
    try:
        dm = datamodule(demo_dir, demo_shards, train=[TaskSource(str(demo_shards["train_mqa"]), "tagged", 1.0)])
        with pytest.raises(ValueError, match=r"train_mqa.*: task 'tagged' \(needs a tag\) needs samples with 'tag'"):
            dm.setup("fit")
    finally:
        TASKS.unregister("tagged")
