"""The processor files of an InternVL export: its frame rule written out (448 px frames or the tower's side, bicubic,
its mean and std, no tiling for video frames) and the visual tokens a frame takes."""

from __future__ import annotations

from llavaction.model.internvl.config import InternVLConfig


def processor_files(config: InternVLConfig) -> dict[str, dict]:
    side = config.image_size
    frames = dict(
        do_resize=True,
        size={"height": side, "width": side},
        resample=3,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        do_convert_rgb=True,
    )
    return {
        "video_preprocessor_config.json": frames
        | {"video_processor_type": "InternVLVideoProcessor", "processor_class": "InternVLProcessor"},
        "preprocessor_config.json": frames
        | {
            "image_processor_type": "GotOcr2ImageProcessorFast",
            "processor_class": "InternVLProcessor",
            "crop_to_patches": False,
        },
        "processor_config.json": {"image_seq_length": config.tokens_per_frame, "processor_class": "InternVLProcessor"},
    }
