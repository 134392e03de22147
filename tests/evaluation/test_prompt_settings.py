"""One prompt-settings object for every path: a question asked of a checkpoint trained with the time instruction and
frame times reads the same through validation, `evaluate mqa`, `predict`, `lmms-export` and `prompts render`."""

import importlib.util
import json

import pytest

from llavaction.cli.evaluate import main as evaluate
from llavaction.cli.predict import main as predict
from llavaction.cli.prompts import main as prompts
from llavaction.cli.train import cli
from llavaction.evaluation.scoring import MQAAnswerer
from llavaction.prompts.encoding import chat_prompt
from llavaction.utils.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from llavaction.utils.jsonl import read_jsonl
from tests.fit_helpers import demo_args


def decoded(tokenizer, ids: list[int]) -> str:
    """A prompt's text from its ids, the image placeholder written as `<image>`."""
    place = ids.index(IMAGE_TOKEN_INDEX)
    return tokenizer.decode(ids[:place]) + IMAGE_PLACEHOLDER + tokenizer.decode(ids[place + 1 :])


@pytest.fixture
def asked(monkeypatch):
    """{path: {question or clip name: the prompt text the model was asked}}, recorded where every path answers."""
    seen: dict[str, dict[str, str]] = {}
    path = ["validation"]
    real = MQAAnswerer.__call__

    def record(self, batch, modes, head_layers=None):
        for row, (key, padding) in enumerate(zip(batch.keys, batch.is_padding.tolist())):
            if not padding:
                ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
                seen.setdefault(path[0], {})[key] = decoded(self.tokenizer, ids)
        return real(self, batch, modes, head_layers)

    monkeypatch.setattr(MQAAnswerer, "__call__", record)
    return seen, path


def test_one_question_reads_the_same_through_every_path(demo_dir, demo_shards, demo_questions, tmp_path, asked):
    seen, path = asked
    root = tmp_path / "run"
    cli(
        demo_args(
            demo_dir,
            demo_shards,
            root,
            "--data.prompt.time_instruction=true",
            "--data.prompt.frame_times=true",
            "--trainer.max_epochs=1",
            "--data.loader.samples_per_epoch=4",
            "--trainer.check_val_every_n_epoch=1",
            "--model.evaluation.max_new_tokens=2",
        )
    )
    checkpoint = root / "checkpoints" / "last.ckpt"
    questions = read_jsonl(demo_questions["validation_mqa"])
    question = questions[0]
    key = question["narration_id"]
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]

    path[0] = "evaluate"
    assert (
        evaluate(
            ["mqa", *common, "--checkpoint", str(checkpoint), "--max-new-tokens", "2", "--num-workers", "0"]
            + ["--out", str(tmp_path / "eval")]
        )
        == 0
    )
    path[0] = "predict"
    video = demo_dir / "videos" / question["participant_id"] / f"{question['video_id']}.MP4"
    assert (
        predict(
            ["--checkpoint", str(checkpoint), "--video", str(video), "--max-new-tokens", "2"]
            + ["--start", str(question["clip_start_sec"]), "--end", str(question["clip_stop_sec"])]
            + ["--options", *question["options"]]
        )
        == 0
    )
    rendered = tmp_path / "prompts.jsonl"
    assert (
        prompts(
            ["render", "--questions", str(demo_questions["validation_mqa"]), "--checkpoint", str(checkpoint)]
            + ["--out", str(rendered)]
        )
        == 0
    )
    task = tmp_path / "lmms"
    assert evaluate(["lmms-export", *common, "--checkpoint", str(checkpoint), "--out", str(task)]) == 0

    render = {row["narration_id"]: row["prompt"] for row in read_jsonl(rendered)}[key]
    spec = importlib.util.spec_from_file_location("task_utils", task / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    import yaml

    class TaskLoader(yaml.SafeLoader):  # the task YAML's `!function` tags are lmms-eval's
        pass

    TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load((task / "ek100_mqa.yaml").read_text(), Loader=TaskLoader)
    kwargs = config["lmms_eval_specific_kwargs"]["default"]
    doc = next(d for d in read_jsonl(task / "questions.jsonl") if d["narration_id"] == key)
    lmms = chat_prompt(utils.doc_to_text(doc, kwargs))
    assert "These frames are located at" in render and "8 frames are uniformly sampled" in render
    assert seen["validation"][key] == seen["evaluate"][key] == render == lmms
    assert seen["predict"][video.stem] == render
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["settings"]["num_frames"] == 8
