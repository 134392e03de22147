"""InternVL against transformers' own class: the same logits and greedy answers as
`InternVLForConditionalGeneration` on the same inputs, the processor's video prompt token for token, action tokens and
heads, packing, and the export that transformers loads back."""

import pytest
import torch

from llavaction.model.internvl import INTERNVL
from llavaction.model.internvl.model import InternVLModel
from llavaction.model.internvl.prompt import CONTEXT_IMAGE, END_IMAGE, START_IMAGE
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.formats import ACTION_TOKEN_INDEX, ClipTiming
from llavaction.prompts.tokenizer import load_tokenizer

IDS = {"context": 1000, "start": 1001, "end": 1002}


def tiny(**overrides) -> InternVLModel:
    from dataclasses import replace

    torch.manual_seed(0)
    config = INTERNVL.preset("tiny")
    config = replace(
        config, start_image_id=IDS["start"], end_image_id=IDS["end"], hf=config.hf | {"image_token_id": 1000}
    )
    return InternVLModel(replace(config, **overrides)).eval()


def inputs(model: InternVLModel, frames: int = 3, rows: int = 2, pad_first: int = 3, action: int = 0):
    """Right-padded rows `text, the clip's frames (<img> + context tokens + </img> each), action tokens, text`."""
    torch.manual_seed(1)
    per_frame = [IDS["start"], *[IDS["context"]] * model.config.tokens_per_frame, IDS["end"]]
    blocks = [t for _ in range(frames) for t in (7, *per_frame)]
    length = 5 + len(blocks) + action + 6
    ids = torch.zeros(rows, length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row in range(rows):
        real = length - (pad_first if row == 0 else 0)
        text = torch.randint(100, 300, (real,)).tolist()
        text[5 : 5 + len(blocks) + action] = blocks + [ACTION_TOKEN_INDEX] * action
        ids[row, :real], mask[row, :real] = torch.tensor(text), 1
    clips = torch.randint(0, 256, (rows, frames, 48, 48, 3), dtype=torch.uint8)
    return ids, mask, model.preprocess(clips)


def test_logits_equal_transformers_forward():
    model = tiny()
    ids, mask, pixels = inputs(model)
    with torch.no_grad():
        ours = model.logits(ids, pixels, mask)
        theirs = model.hf(input_ids=ids, attention_mask=mask, pixel_values=pixels.flatten(0, 1)).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() <= 1e-5
    assert ours.shape == theirs.shape and not torch.equal(ours[0, 0], ours[1, 0])


def test_greedy_answers_equal_transformers_generate():
    model = tiny()
    ids, mask, pixels = inputs(model)
    left, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for row in range(ids.shape[0]):  # transformers' generate takes left-padded rows
        real = ids[row][mask[row].bool()]
        left[row, ids.shape[1] - len(real) :], left_mask[row, ids.shape[1] - len(real) :] = real, 1
    ours = model.generate(ids, pixels, mask, max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
    with torch.no_grad():
        theirs = model.hf.generate(
            input_ids=left,
            attention_mask=left_mask,
            pixel_values=pixels.flatten(0, 1),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
        )
    assert ours.tokens == theirs[:, ids.shape[1] :].tolist()


@pytest.mark.parametrize("mode, count", [("one_token", 1), ("three_tokens", 3)])
def test_action_tokens_after_the_video_are_learned_and_read(mode, count):
    model = tiny(vision_supervision=mode, action_types=(3, 4, 5))
    ids, mask, pixels = inputs(model, action=count)
    labels = ids.masked_fill(~mask.bool(), -100).masked_fill(ids < 0, -100)
    out = model(ids, pixels, mask, labels, head_layers="last")
    (out.loss + sum(logits.sum() for logits in out.action_logits[0])).backward()
    assert model.action_supervision.grad is not None and model.action_supervision.shape[0] == count
    assert [t.shape for t in out.action_logits[0]] == [(2, 3), (2, 4), (2, 5)]
    places = model.action_places(ids)
    assert (ids.gather(1, places) == ACTION_TOKEN_INDEX).all()
    generated = model.generate(ids, pixels, mask, max_new_tokens=2, eos_token_id=-1, pad_token_id=0, read_heads=True)
    with torch.no_grad():
        scored = model.last_logits(ids, pixels, mask, head_layers="last")
    assert torch.allclose(generated.action_logits[0][0][1], scored.action_logits[0][0][1], atol=1e-5)


def test_packed_rows_give_the_padded_loss():
    model = tiny()
    ids, mask, pixels = inputs(model)
    labels = ids.masked_fill(~mask.bool(), -100)
    with torch.no_grad():
        padded = model(ids, pixels, mask, labels).loss
        packed = model(ids, pixels, mask, labels, pack=True).loss
    assert abs(padded - packed) < 1e-5


def test_the_prompt_is_the_processors_video_text(demo_dir):
    """Our ids of a clip equal the tokenised text transformers' InternVLProcessor expands `<video>` to
    (`FrameN: <img>` + context tokens + `</img>`, lines joined by newlines)."""
    from llavaction.model.architecture import meet_tokenizer

    tokenizer = load_tokenizer(demo_dir / "tokenizer")
    config = meet_tokenizer(INTERNVL, INTERNVL.preset("tiny"), tokenizer, from_preset=True)
    video = config.chat_format()
    encoder = PromptEncoder(tokenizer, chat=video)
    ids, length = video.visual_ids(ClipTiming.even(4, 2.0), 32, encoder._ids)
    expanded = "\n".join(
        f"Frame{i + 1}: {START_IMAGE}{CONTEXT_IMAGE * config.tokens_per_frame}{END_IMAGE}" for i in range(4)
    )
    assert ids == tokenizer(expanded, add_special_tokens=False)["input_ids"] and length == len(ids)
    assert ids.count(config.hf["image_token_id"]) == 4 * config.tokens_per_frame == 4 * 16


def test_an_export_loads_in_transformers_and_back(tmp_path, demo_dir):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from llavaction.model.architecture import meet_tokenizer

    tokenizer = load_tokenizer(demo_dir / "tokenizer")
    config = meet_tokenizer(INTERNVL, INTERNVL.preset("tiny"), tokenizer, from_preset=True)
    config = type(config).from_dict(config.as_dict() | {"vision_supervision": "one_token", "action_types": (3, 4, 5)})
    torch.manual_seed(0)
    model = InternVLModel(config).eval()
    INTERNVL.export(model, model.state_dict(), tmp_path, tokenizer, "original", config.chat_format())
    assert {"config.json", "model.safetensors", "action_heads.safetensors", "processor_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = INTERNVL.load(tmp_path, INTERNVL.read_checkpoint(tmp_path, _config(tmp_path), str(tmp_path)), False)
    assert loaded.config.chat_format() == config.chat_format() and loaded.config.action_types == (3, 4, 5)
    embeddings = "hf.model.language_model.embed_tokens.weight"
    action = AutoTokenizer.from_pretrained(str(tmp_path)).convert_tokens_to_ids("<|action_0|>")
    for name, tensor in model.state_dict().items():
        if name == embeddings:  # the learned action token became a vocabulary token: its vector in its row
            tensor = tensor.clone()
            tensor[action] = model.action_supervision[0]
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    hf = AutoModelForImageTextToText.from_pretrained(str(tmp_path))
    assert type(hf).__name__ == "InternVLForConditionalGeneration"
    question = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}]
    rendered = AutoTokenizer.from_pretrained(str(tmp_path)).apply_chat_template(question, tokenize=False)
    assert rendered == "<|im_start|>user\n<video><|action_0|>\nQ<|im_end|>\n"  # the processor expands <video>


def _config(folder) -> dict:
    import json

    return json.loads((folder / "config.json").read_text())
