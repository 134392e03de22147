"""lmms-eval hooks for the EK-100-MQA task exported by llavaction (data_prep.export_lmms_eval).

The question wording and the answer parsing are llavaction's own (`pip install llavaction` in the lmms-eval
environment), so a question reads and scores exactly as in llavaction's evaluation.
"""

from pathlib import Path

from PIL import Image

from llavaction.metrics import parse_choice
from llavaction.prompts import PromptOptions, user_text

TASK_DIR = Path(__file__).parent


def doc_to_visual(doc):
    folder = TASK_DIR / "frames" / doc["narration_id"]
    return [Image.open(path).convert("RGB") for path in sorted(folder.glob("*.jpg"))]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return user_text(doc, "mqa", len(doc["frame_ids"]), PromptOptions())


def doc_to_target(doc):
    return doc["answer_letter"]


def process_results(doc, results):
    chosen = parse_choice(results[0], doc["options"])
    return {"mqa_accuracy": float(chosen is not None and chosen == doc["answer_index"])}
