"""The processor files of an InternVL export: its frame rule written out (448 px frames or the tower's side, bicubic,
its mean and std, no tiling for video frames), the visual tokens a frame takes, and the chat template that writes a
video as `<video>\\n` (what InternVLProcessor expands, and serving engines read)."""

from __future__ import annotations

from llavaction.model.internvl.config import InternVLConfig

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\\n' }}{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)


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
