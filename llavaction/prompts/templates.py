"""Chat templates: what a checkpoint's own template says (the system turn it writes when a conversation gives none,
read by rendering it), and the ChatML template an export carries, which writes a sample as this codebase does (system
turn, the clip's marker before the user's words) so that transformers' processors and serving engines render the
same prompt."""

from __future__ import annotations

import re

from llavaction.prompts.encoding import ASSISTANT_START, USER_START
from llavaction.utils.constants import EOS_TOKEN

PROBE = "\x00probe\x00"  # user text no template alters
SYSTEM_TURN = re.compile(r"<\|im_start\|>system\n(?P<text>.*)<\|im_end\|>\n", re.DOTALL)


class TemplateError(ValueError):
    """A chat template this codebase cannot follow; the message names it."""


def template_system(tokenizer, source: str) -> str | None:
    """The system turn the tokenizer's ChatML template writes before a conversation that gives none (None: it writes
    none); a template that is not ChatML is refused naming `source`."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBE}], tokenize=False, add_generation_prompt=True
    )
    before, found, after = rendered.partition(f"{USER_START}{PROBE}")
    if not found or after != f"{EOS_TOKEN}\n{ASSISTANT_START}":
        raise TemplateError(f"{source}: its chat template is not ChatML (<|im_start|>role ... <|im_end|>)")
    if not before:
        return None
    system = SYSTEM_TURN.fullmatch(before)
    if system is None:
        raise TemplateError(f"{source}: its chat template writes {before!r} before the user turn, not a system turn")
    return system["text"]


def chatml_template(system: str | None, video_marker: str, image_marker: str) -> str:
    """A ChatML template (jinja, as transformers and serving engines read it): the given system turn unless the
    conversation opens with its own, text content as is, a video part as `video_marker` and an image part as
    `image_marker` before the text of its message."""
    default = "" if system is None else f"<|im_start|>system\n{system}<|im_end|>\n"
    return (
        "{% if messages[0]['role'] != 'system' %}" + jinja_text(default) + "{% endif %}"
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}"
        "{% if part['type'] == 'video' or 'video' in part %}" + jinja_text(video_marker) + ""
        "{% elif part['type'] == 'image' or 'image' in part %}" + jinja_text(image_marker) + ""
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def jinja_text(text: str) -> str:
    """Literal text inside a jinja template."""
    return "{{ " + repr(text) + " }}" if text else ""
