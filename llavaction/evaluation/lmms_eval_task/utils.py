"""lmms-eval hooks for the EK-100-MQA task exported by llavaction (`python -m llavaction.cli.evaluate lmms-export`).

The question wording and the answer scoring are llavaction's own (install llavaction in the lmms-eval environment), so
a question reads and scores exactly as in `llavaction.cli.evaluate mqa`. The prompt settings are the task YAML's
lmms_eval_specific_kwargs; prior actions, when exported, are in each question (`show_prior_actions`).
"""

from pathlib import Path

from llavaction.benchmark.answers import paper_correct, parse_choice
from llavaction.prompts.tasks import user_text
from llavaction.prompts.wording import PromptOptions

TASK_DIR = Path(__file__).parent
DEFAULTS = {"num_frames": 16, "time_instruction": False, "frame_times": False, "visual": "video"}


def settings(kwargs) -> dict:
    return DEFAULTS | dict(kwargs or {})


def doc_to_visual(doc, lmms_eval_specific_kwargs=None):
    """[the question's MP4 path] for video models (their readers open a path), or its frames as PIL images."""
    if settings(lmms_eval_specific_kwargs)["visual"] == "frames":
        from PIL import Image

        folder = TASK_DIR / "frames" / doc["narration_id"]
        return [Image.open(path).convert("RGB") for path in sorted(folder.glob("*.jpg"))]
    return [str(TASK_DIR / "videos" / f"{doc['narration_id']}.mp4")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The user turn after `<image>\\n`, as llavaction asks it; the model wrapper adds the chat template."""
    chosen = settings(lmms_eval_specific_kwargs)
    options = PromptOptions(time_instruction=chosen["time_instruction"], frame_times=chosen["frame_times"])
    return user_text(doc, "mqa", int(chosen["num_frames"]), options, bool(doc.get("show_prior_actions")))


def doc_to_target(doc):
    return f"{doc['answer_letter']}. {doc['options'][doc['answer_index']]}"


def process_results(doc, results):
    answer = results[0]
    truth = doc["options"][doc["answer_index"]]
    return {
        "mqa_accuracy": float(paper_correct(answer, truth)),
        "letter_accuracy": float(parse_choice(answer, doc["options"]) == doc["answer_index"]),
    }
