"""The lmms-eval export: a task folder whose videos hold exactly the shards' frames and whose prompts and scoring are
llavaction's; with the real lmms-eval (`make test-lmms`), its TaskManager builds the task and simple_evaluate with a
stub model reports the expected accuracy."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from llavaction.cli.evaluate import main as evaluate
from llavaction.data.shards import iter_samples, shard_urls
from llavaction.evaluation.lmms_eval import ExportSettings
from llavaction.prompts.tasks import user_text
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import one_line_exit


def export(demo_questions, demo_shards, out: Path, *extra) -> None:
    assert (
        evaluate(
            [
                "lmms-export",
                "--questions",
                str(demo_questions["validation_mqa"]),
                "--shards",
                str(demo_shards["validation_mqa"]),
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )


def load_utils(folder: Path):
    spec = importlib.util.spec_from_file_location(f"task_utils_{folder.name}", folder / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return utils


@pytest.fixture(scope="module")
def task(demo_questions, demo_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lmms") / "ek100_mqa"
    export(demo_questions, demo_shards, out, "--time-instruction", "--prior-actions", "oracle")
    return out


def test_videos_hold_the_shards_frames_and_prompts_are_llavactions(task, demo_shards):
    import decord
    import yaml

    utils = load_utils(task)
    settings = yaml.load((task / "ek100_mqa.yaml").read_text().replace("!function", ""), Loader=yaml.SafeLoader)
    kwargs = settings["lmms_eval_specific_kwargs"]["default"]
    assert kwargs == {"num_frames": 8, "time_instruction": True, "frame_times": False, "visual": "video"}
    (card,) = json.loads((task / "benchmark.json").read_text())["question_files"].values()
    assert card["name"] == "EK-100-MQA/annotations/K5" and card["num_options"] == 5
    assert (
        f"# benchmark: EK-100-MQA/annotations/K5 v1.0 {card['questions_digest']}"
        in (task / "ek100_mqa.yaml").read_text()
    )
    docs = read_jsonl(task / "questions.jsonl")
    samples = {s["__key__"]: s for s in iter_samples(shard_urls(demo_shards["validation_mqa"]))}
    assert {d["narration_id"] for d in docs} == set(samples)
    for doc in docs:
        (path,) = utils.doc_to_visual(doc, kwargs)
        reader = decord.VideoReader(path)
        frames = reader.get_batch([int(i) for i in np.linspace(0, len(reader) - 1, 8)]).asnumpy()[:, ::2, ::2]
        stored = np.stack([simplejpeg.decode_jpeg(samples[doc["narration_id"]][f"{i:03d}.jpg"]) for i in range(8)])
        # the demo's 32 px frames are written at 64 px (nearest neighbour; see MIN_VIDEO_SIDE)
        assert len(reader) == 8 and np.abs(frames.astype(int) - stored.astype(int)).mean() < 6
        expected = user_text(doc, "mqa", 8, PromptOptions(time_instruction=True), doc["show_prior_actions"])
        assert utils.doc_to_text(doc, kwargs) == expected
    assert any(d["show_prior_actions"] for d in docs)
    doc = docs[0]
    right = f"{doc['answer_letter']}. {doc['options'][doc['answer_index']]}"
    assert utils.process_results(doc, [right]) == {"mqa_accuracy": 1.0, "letter_accuracy": 1.0}
    assert utils.process_results(doc, [doc["options"][doc["answer_index"]]])["mqa_accuracy"] == 1.0
    wrong = (doc["answer_index"] + 1) % len(doc["options"])
    assert utils.process_results(doc, [f"A. {doc['options'][wrong]}"])["mqa_accuracy"] == 0.0


def test_frames_mode_and_missing_questions(demo_questions, demo_shards, tmp_path, capsys):
    export(demo_questions, demo_shards, tmp_path / "frames", "--visual", "frames", "--num-frames", "4")
    utils = load_utils(tmp_path / "frames")
    doc = read_jsonl(tmp_path / "frames" / "questions.jsonl")[0]
    assert len(utils.doc_to_visual(doc, {"visual": "frames"})) == 4
    (tmp_path / "q.jsonl").write_text(json.dumps({"narration_id": "NOPE_1"}) + "\n")
    assert (
        evaluate(
            [
                "lmms-export",
                "--questions",
                str(tmp_path / "q.jsonl"),
                "--shards",
                str(demo_shards["validation_mqa"]),
                "--out",
                str(tmp_path / "task2"),
            ]
        )
        == 2
    )
    assert "1 questions have no frames" in capsys.readouterr().err


@pytest.mark.lmms
def test_the_real_lmms_eval_builds_and_scores_the_task(task):
    lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make test-lmms`")
    from lmms_eval.api.model import lmms
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    docs = {d["narration_id"]: d for d in read_jsonl(task / "questions.jsonl")}

    class KnowsHalf(lmms):
        """Answers right (as 'B. text') on the first half of the questions, with a wrong option on the rest, after
        checking that the video it is given decodes."""

        def generate_until(self, requests):
            import decord

            answers = []
            for request in requests:
                context, _, doc_to_visual, doc_id, task_name, split = request.args
                doc = self.task_dict[task_name][split][doc_id]
                (path,) = doc_to_visual(doc)
                assert len(decord.VideoReader(path)) == 8 and context.startswith("The provided video lasts for")
                index = (
                    doc["answer_index"]
                    if sorted(docs).index(doc["narration_id"]) < len(docs) // 2
                    else (doc["answer_index"] + 1) % len(doc["options"])
                )
                answers.append(f"{doc['answer_letter']}. {doc['options'][index]}")
            return answers

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    manager = TaskManager(include_path=str(task))
    assert "ek100_mqa" in manager.all_tasks
    results = simple_evaluate(model=KnowsHalf(), tasks=["ek100_mqa"], task_manager=manager, limit=None)
    figures = results["results"]["ek100_mqa"]
    assert figures["mqa_accuracy,none"] == pytest.approx(0.5) and lmms_eval is not None


def test_an_export_replaces_the_earlier_one_only_when_complete(demo_questions, demo_shards, tmp_path, monkeypatch):
    from llavaction.evaluation import lmms_eval

    out = tmp_path / "task"
    export(demo_questions, demo_shards, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    written = []

    def fail_midway(path, frames, fps=1):
        written.append(path)
        if len(written) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(lmms_eval, "write_mp4", fail_midway)
    assert (
        evaluate(
            ["lmms-export", "--questions", str(demo_questions["validation_mqa"]), "--shards"]
            + [str(demo_shards["validation_mqa"]), "--out", str(out)]
        )
        == 2
    )
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the earlier export, whole
    assert [p.name for p in tmp_path.iterdir()] == ["task"]  # no partial folder left beside it


@pytest.fixture(scope="module")
def sweep_group(demo_dir, demo_shards, tmp_path_factory) -> Path:
    """A sweep's builds (random and annotations, K 2 and 3) over the demo validation shards as a frame store, exported
    as one lmms-eval group."""
    from data_prep.build_mqa import main as build_mqa

    root = tmp_path_factory.mktemp("sweep")
    annotations = str(demo_dir / "annotations")
    build_mqa(
        [
            "--annotations",
            annotations,
            "--split",
            "validation",
            "--out",
            str(root / "val.jsonl"),
            "--benchmark",
            "--sweep",
            "--sweep-options",
            "2",
            "3",
        ]
    )
    files = sorted(str(p) for p in root.glob("val.*.K*.jsonl"))
    out = root / "tasks"
    assert (
        evaluate(
            [
                "lmms-export",
                "--questions",
                *files,
                "--frames",
                str(demo_shards["validation_mqa"]),
                "--out",
                str(out),
                "--group",
                "ek100_mqa_sweep",
            ]
        )
        == 0
    )
    return out


TASKS = [
    "ek100_mqa_annotations_k2_gt",
    "ek100_mqa_annotations_k3_gt",
    "ek100_mqa_random_k2_gt",
    "ek100_mqa_random_k3_gt",
]


def test_a_sweep_exports_as_one_group_of_tasks(sweep_group):
    import yaml

    group = yaml.safe_load((sweep_group / "ek100_mqa_sweep.yaml").read_text())
    assert group == {"group": "ek100_mqa_sweep", "task": TASKS}
    for name in TASKS:
        text = (sweep_group / name / f"{name}.yaml").read_text()
        assert f"\ntask: {name}\n" in text and f"--tasks {name} " in text
        k = int(name.split("_k")[1][0])
        assert f"# benchmark: EK-100-MQA/{name.split('_')[2]}/K{k}+gt v1.0 sha256:" in text
        docs = read_jsonl(sweep_group / name / "questions.jsonl")
        assert len(docs) == 8 and all(len(d["options"]) == k for d in docs)
        assert len(list((sweep_group / name / "videos").glob("*.mp4"))) == 8


@pytest.mark.lmms
def test_the_real_lmms_eval_loads_the_group(sweep_group):
    pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make test-lmms`")
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(sweep_group))
    assert "ek100_mqa_sweep" in manager.all_groups and set(TASKS) <= set(manager.all_tasks)
    tasks = get_task_dict(["ek100_mqa_sweep"], manager)
    loaded = {}
    for value in tasks.values():  # {group: {task: Task}} in lmms-eval 0.7
        loaded |= value if isinstance(value, dict) else {}
    docs = {name: list(task.test_docs()) for name, task in loaded.items()}
    assert sorted(docs) == TASKS and all(len(d) == 8 for d in docs.values())
    assert {len(d[0]["options"]) for d in docs.values()} == {2, 3}


def test_an_export_refuses_a_folder_it_did_not_write_and_names_a_model_folder(
    demo_dir, demo_questions, demo_shards, tmp_path, capsys
):
    """`--out` a folder holding a thesis, or the shards it reads: refused in one line, nothing touched. With a
    Lightning .ckpt, the printed lmms-eval command names the model folder to export, not the .ckpt; the progress
    counts the questions, not the store's samples."""
    thesis = tmp_path / "d"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("x\n")
    questions, shards = str(demo_questions["validation_mqa"]), str(demo_shards["validation_mqa"])
    args = ["lmms-export", "--questions", questions, "--shards", shards]
    error = one_line_exit(capsys, lambda: evaluate([*args, "--out", str(thesis)]))
    assert "holds 'thesis.tex', which llavaction evaluate lmms-export did not write" in error
    assert [p.name for p in thesis.iterdir()] == ["thesis.tex"]
    before = sorted(p.name for p in Path(shards).iterdir())
    error = one_line_exit(capsys, lambda: evaluate([*args, "--out", shards]))
    assert "is also this command's input --shards" in error and sorted(p.name for p in Path(shards).iterdir()) == before
    command = ExportSettings(num_frames=8, checkpoint="runs/demo/checkpoints/last.ckpt").command(thesis)
    assert "pretrained=EXPORTED_MODEL," in command and ".ckpt" not in command
    assert "pretrained=org/model," in ExportSettings(num_frames=8, checkpoint="org/model").command(thesis)
    # the store holds more samples than the file asks: the bar counts the file's questions
    store = str(demo_shards["train_mqa"])
    capsys.readouterr()
    some = tmp_path / "some.jsonl"
    some.write_text("".join(json.dumps(q) + "\n" for q in read_jsonl(demo_questions["train_mqa"])[:3]))
    assert evaluate(["lmms-export", "--questions", str(some), "--frames", store, "--out", str(tmp_path / "t")]) == 0
    assert "3/3" in capsys.readouterr().err


def test_the_vllm_engine_names_lmms_evals_vllm_model_for_the_qwen_families(
    demo_questions, demo_shards, tmp_path, capsys
):
    qwen3 = ExportSettings(num_frames=16, checkpoint="exports/q3", backbone="qwen3_vl", engine="vllm")
    assert "--model vllm --model_args model=exports/q3,tensor_parallel_size=1,data_parallel_size=1,nframes=16," in (
        qwen3.command(tmp_path)
    )
    assert qwen3.command(tmp_path).count("is_qwen3_vl=True") == 1
    qwen2_5 = ExportSettings(num_frames=8, checkpoint="exports/q2", backbone="qwen2_5_vl", engine="vllm")
    assert "max_frame_num=8 --tasks" in qwen2_5.command(tmp_path) and "is_qwen3_vl" not in qwen2_5.command(tmp_path)
    assert "--model qwen2_5_vl " in ExportSettings(num_frames=8, backbone="qwen2_5_vl").command(tmp_path)
    questions, shards = str(demo_questions["validation_mqa"]), str(demo_shards["validation_mqa"])
    args = [
        "lmms-export",
        "--questions",
        questions,
        "--shards",
        shards,
        "--engine",
        "vllm",
        "--out",
        str(tmp_path / "t"),
    ]
    error = one_line_exit(capsys, lambda: evaluate(args))  # the demo's LLaVA-Video
    assert "--engine vllm: vLLM does not serve llava_video exports (it serves qwen2_5_vl, qwen3_vl)" in error
    assert not (tmp_path / "t").exists()
