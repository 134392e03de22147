"""Run by the vLLM environment's Python (it has torchvision): transformers' own processor, loaded from an export by
AutoProcessor, on each case's text, frames and video metadata; writes its ids, pixel values and grid. Imports nothing
of llavaction."""

import json
import sys
from pathlib import Path

import numpy as np
from transformers import AutoProcessor
from transformers.video_utils import VideoMetadata

export, work = sys.argv[1], Path(sys.argv[2])
processor = AutoProcessor.from_pretrained(export)
cases = json.loads((work / "cases.json").read_text())
frames = np.load(work / "frames.npz")
outputs = {}
for index, case in enumerate(cases):
    metadata = VideoMetadata(**{k: v for k, v in case["metadata"].items() if k != "do_sample_frames"})
    found = processor(
        text=[case["text"]],
        videos=[frames[f"arr_{index}"]],
        video_metadata=[metadata],
        do_sample_frames=False,
        return_tensors="np",
    )
    outputs[f"input_ids_{index}"] = found["input_ids"][0]
    outputs[f"pixels_{index}"] = found["pixel_values_videos"]
    outputs[f"grid_{index}"] = found["video_grid_thw"][0]
np.savez(work / "outputs.npz", **outputs)
