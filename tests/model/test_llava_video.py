"""The LLaVA-Video model: shapes, splicing, packing, cached decoding, the original layout, action supervision."""

import json

import pytest
import torch
import torch.nn.functional as F

from llavaction.model.llava_video import LlavaVideoConfig, LlavaVideoModel, preset
from llavaction.model.llava_video.checkpoint import INDEX_FILE
from llavaction.prompts.formats import ClipTiming
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def tiny(**overrides) -> LlavaVideoModel:
    torch.manual_seed(0)
    return LlavaVideoModel(preset("tiny", **overrides)).eval()


def inputs(batch=2, frames=3, length=12, place=(2, 5), pad_last=3):
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (batch, length))
    for row, p in enumerate(place[:batch]):
        ids[row, p] = IMAGE_TOKEN_INDEX
    mask = torch.ones_like(ids)
    if pad_last:
        mask[-1, -pad_last:] = 0
    return ids, torch.randn(batch, frames, 3, 32, 32), mask


def test_forward_backward_shapes():
    model = tiny().train()
    ids, pixels, mask = inputs()
    labels = ids.clone().masked_fill(ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX).masked_fill(mask == 0, IGNORE_INDEX)
    out = model(ids, pixels, mask, labels)
    visual = model.config.visual_tokens(3)
    assert out.logits.shape == (int((labels[:, 1:] != IGNORE_INDEX).sum()), 1024)  # the supervised positions only
    assert model.logits(ids, pixels, mask).shape == (2, 12 - 1 + visual, 1024)
    out.loss.backward()
    assert model.vision_tower.encoder.layers[0].mlp.fc1.weight.grad is not None
    assert model.image_newline.grad is not None and model.projector[0].weight.grad is not None


@pytest.mark.parametrize("pool", ["bilinear", "average", "max"])
@pytest.mark.parametrize("newline", ["grid", "frame", "one_token", "none"])
def test_visual_tokens_follow_the_formula(pool, newline):
    model = tiny(spatial_pool_mode=pool, newline_position=newline)
    side = 32 // 4  # 8x8 patches
    pooled = 4
    per_frame = {"grid": pooled * (pooled + 1), "frame": pooled * pooled + 1}.get(newline, pooled * pooled)
    closing = int(newline == "one_token")
    assert model.config.tokens_per_frame == per_frame and model.config.pooled_side == pooled
    assert model.encode_video(torch.randn(2, 3, 3, 32, 32)).shape == (2, 3 * per_frame + closing, 128)
    assert model.config.visual_tokens(3) == 3 * per_frame + closing
    assert model.config.chat_format().visual_ids(ClipTiming.even(3, 1.0), 32, list)[1] == 3 * per_frame + closing
    assert side // 2 == pooled


def test_one_token_closes_the_video_after_the_action_token_and_reads_heads_before_it():
    """The reference's one_token layout: frames, the learned action token, then one newline for the whole video."""
    model = tiny(newline_position="one_token", vision_supervision="one_token", action_types=(3, 4, 5))
    tokens = model.encode_video(torch.randn(1, 2, 3, 32, 32))[0]
    assert tokens.shape[0] == 2 * 16 + 2
    assert torch.equal(tokens[-1], model.image_newline) and torch.equal(tokens[-2], model.action_supervision[0])
    hidden = torch.arange(40.0)[None, :, None].expand(1, 40, 128)
    ids = torch.tensor([[5, 6, IMAGE_TOKEN_INDEX, 7]])
    verb = model.heads_at(hidden, model.action_places(ids, num_visual=34))[0]
    # the placeholder at 2: visual tokens at 2..35, the action token at 34
    assert torch.equal(verb, model.verb_head(hidden[:, 34]))


def test_no_token_is_the_original_name_of_none(tmp_path):
    config = tiny(newline_position="none").config
    assert config.to_original()["mm_newline_position"] == "no_token"
    assert type(config).from_original(config.to_original()).newline_position == "none"


def test_llava_video_7b_token_counts():
    config = preset("7b")
    assert config.vision_layers_kept == 26 and config.pooled_side == 14
    assert config.tokens_per_frame == 14 * 15 and config.visual_tokens(64) == 13440
    assert preset("7b", spatial_pool_mode="average").pooled_side == 13


def test_newline_ends_every_row():
    model = tiny()
    tokens = model.encode_video(torch.randn(1, 2, 3, 32, 32))[0]
    rows = tokens.view(2 * 4, 5, 128)
    assert torch.equal(rows[:, -1], model.image_newline.expand(8, -1))


def test_splice_is_independent_of_padding_side():
    model = tiny()
    ids, pixels, _ = inputs(batch=1, place=(3,), pad_last=0)
    right = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    left = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    mask_right = torch.cat([torch.ones(1, 12), torch.zeros(1, 4)], 1).long()
    mask_left = mask_right.flip(1)
    with torch.no_grad():
        plain = model.logits(ids, pixels)
        r = model.logits(right, pixels, mask_right)
        lft = model.logits(left, pixels, mask_left)
        last_r = model.last_logits(right, pixels, mask_right).logits
    n = plain.shape[1]
    assert torch.allclose(r[:, :n], plain, atol=1e-5) and torch.allclose(lft[:, -n:], plain, atol=1e-5)
    assert torch.allclose(last_r, plain[:, -1], atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_padded_batches_give_the_same_loss_and_gradients(attn):
    """Packing computes no padding yet changes nothing: the loss, its gradients, the last-token logits and the action
    heads (read at every layer) equal those of the padded batch, rows of different lengths included."""
    model = tiny(attn_implementation=attn, vision_supervision="three_tokens", action_types=(8, 9, 40)).train()
    ids, pixels, mask = inputs(batch=3, place=(2, 5, 1), pad_last=5)
    mask[1, -2:] = 0
    labels = ids.clone().masked_fill(ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX).masked_fill(mask == 0, IGNORE_INDEX)
    results = []
    for pack in (False, True):
        model.zero_grad()
        out = model(ids, pixels, mask, labels, head_layers="all", pack=pack)
        heads = torch.cat([torch.cat(layer, -1) for layer in out.action_logits], -1)
        (out.loss + heads.sum()).backward()
        last = model.last_logits(ids, pixels, mask, pack=pack).logits
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((out.loss.detach(), out.logits.detach(), heads.detach(), last.detach(), grads))
    (loss, logits, heads, last, grads), (p_loss, p_logits, p_heads, p_last, p_grads) = results
    assert torch.allclose(loss, p_loss, atol=1e-6) and torch.allclose(logits, p_logits, atol=1e-5)
    assert torch.allclose(heads, p_heads, atol=1e-5) and torch.allclose(last, p_last, atol=1e-5)
    assert len(grads) == len(p_grads) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, p_grads))


def test_packed_rows_do_not_attend_to_each_other():
    """A row's packed outputs do not depend on the rows packed before it."""
    model = tiny()
    ids, pixels, mask = inputs(batch=2, pad_last=0)
    with torch.no_grad():
        alone = model.last_logits(ids[1:], pixels[1:], pack=True).logits
        other_first = ids.clone()
        other_first[0, 6:] = (other_first[0, 6:] + 7) % 1000
        packed = model.last_logits(other_first, pixels * torch.tensor([3.0, 1.0]).view(2, 1, 1, 1, 1), pack=True).logits
    assert torch.allclose(packed[1], alone[0], atol=1e-5)


def test_checkpointed_and_compiled_blocks_give_the_same_loss_and_gradients():
    """Activation checkpointing and per-block torch.compile change how a step runs, not what it computes. The blocks'
    graphs go to a backend that records them and runs them as traced (no C++ compiler needed)."""
    from llavaction.model.llava_video import LLAVA_VIDEO
    from llavaction.training.sharding import checkpoint_blocks, compile_blocks

    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    ids, pixels, mask = inputs()
    labels = ids.clone().masked_fill(ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX).masked_fill(mask == 0, IGNORE_INDEX)
    results = []
    for wrap in (False, True):
        model = tiny().train()
        if wrap:
            blocks = LLAVA_VIDEO.block_types
            checkpoint_blocks(model, blocks)
            compile_blocks(model, blocks, backend=recording_backend)
        loss = model(ids, pixels, mask, labels).loss
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]))
    (loss, grads), (wrapped_loss, wrapped_grads) = results
    assert len(graphs) >= 2  # at least one graph per block class
    assert torch.allclose(loss, wrapped_loss, atol=1e-6) and len(grads) == len(wrapped_grads)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, wrapped_grads))


def test_cached_greedy_decoding_matches_full_forwards():
    """Each row of a padded batch decodes as it would alone with a full forward pass per new token."""
    model = tiny()
    ids, pixels, mask = inputs(pad_last=4)
    generation = model.generate(ids, pixels, mask, max_new_tokens=5, eos_token_id=-1, pad_token_id=0)
    reused = model.generate(
        ids, None, mask, max_new_tokens=5, eos_token_id=-1, pad_token_id=0, visual_tokens=model.encode_video(pixels)
    )
    assert reused.tokens == generation.tokens
    for row in range(2):
        prompt = ids[row, mask[row].bool()][None]
        expected = []
        for step in range(5):
            logits = model.last_logits(prompt, pixels[row : row + 1]).logits
            if step == 0:  # the first step's logits are the prompt's next-token logits (letter scoring)
                assert torch.allclose(generation.first_logits[row], logits[0], atol=1e-4)
            expected.append(int(logits.argmax(-1)))
            prompt = torch.cat([prompt, torch.tensor([[expected[-1]]])], dim=1)
        assert generation.tokens[row] == expected


def test_generation_stops_at_eos():
    model = tiny()
    ids, pixels, mask = inputs()
    first = model.generate(ids, pixels, mask, max_new_tokens=1, eos_token_id=-1, pad_token_id=0).tokens
    answers = model.generate(ids, pixels, mask, max_new_tokens=4, eos_token_id=first[0][0], pad_token_id=0).tokens
    assert answers[0] == [] and len(answers[1]) <= 4


def test_loss_covers_only_labelled_tokens():
    model = tiny()
    ids, pixels, mask = inputs(batch=1, place=(2,), pad_last=0)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 9:] = ids[0, 9:]
    with torch.no_grad():
        every = model.logits(ids, pixels, mask)
        sparse = model(ids, pixels, mask, labels)
    visual = model.config.visual_tokens(3)
    shift = visual - 1
    positions = torch.arange(8, 11) + shift  # predicting tokens 9..11
    expected = F.cross_entropy(every[0, positions], ids[0, 9:])
    assert torch.allclose(sparse.loss, expected, atol=1e-5)
    assert sparse.logits.shape == (3, 1024) and torch.allclose(sparse.logits, every[0, positions], atol=1e-5)
    assert (sparse.labels[0, 2 : 2 + visual] == IGNORE_INDEX).all()


def test_placeholder_must_appear_once():
    model = tiny()
    ids, pixels, mask = inputs()
    ids[1, 7] = IMAGE_TOKEN_INDEX
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        model.logits(ids, pixels, mask)
    with pytest.raises(ValueError, match="forward trains on labels"):
        model(ids, pixels, mask)


def test_checkpoint_round_trip_in_original_layout(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    names = set()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    for name in (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.mm_projector.0.weight",
        "model.mm_projector.2.bias",
        "model.image_newline",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight",
        "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
    ):
        assert name in names
    assert not any("encoder.layers.2." in n for n in names)  # the published tower's last layer is not stored
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlavaQwenForCausalLM"] and config["mm_vision_select_layer"] == -2
    assert config["vision_config"]["num_hidden_layers"] == 3 and config["mm_hidden_size"] == 64
    loaded = LlavaVideoModel.from_pretrained(tmp_path).eval()
    ids, pixels, mask = inputs()
    with torch.no_grad():
        assert torch.equal(model.logits(ids, pixels, mask), loaded.logits(ids, pixels, mask))


def test_sharded_checkpoint_and_tied_embeddings(tmp_path):
    model = tiny(text=preset("tiny").text | {"tie_word_embeddings": True})
    model.save_pretrained(tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1 and "lm_head.weight" not in index["weight_map"]
    loaded = LlavaVideoModel.from_pretrained(tmp_path).eval()
    assert loaded.llm.lm_head.weight is loaded.llm.model.embed_tokens.weight
    ids, pixels, mask = inputs()
    with torch.no_grad():
        assert torch.equal(model.logits(ids, pixels, mask), loaded.logits(ids, pixels, mask))


def test_strict_loading_lists_missing_and_unexpected(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny().save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors.pop("model.image_newline")
    tensors["model.extra_head.weight"] = torch.zeros(2)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        LlavaVideoModel.from_pretrained(tmp_path)
    assert "model.image_newline" in str(err.value) and "model.extra_head.weight" in str(err.value)


def test_config_without_vision_config():
    base = preset("7b").to_original()
    base.pop("vision_config")
    config = LlavaVideoConfig.from_original(base | {"mm_vision_tower": "/ckpts/siglip-so400m-patch14-384"})
    assert config.vision["num_hidden_layers"] == 27 and config.vision_layers_kept == 26
    with pytest.raises(ValueError, match="not a known one"):
        LlavaVideoConfig.from_original(base | {"mm_vision_tower": "my/clip-tower"})
    with pytest.raises(ValueError, match="missing mm_vision_tower"):
        LlavaVideoConfig.from_original({k: v for k, v in base.items() if k != "mm_vision_tower"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_flash_attention_needs_a_gpu():
    with pytest.raises(ValueError, match="flash_attention_2' needs a CUDA GPU"):
        LlavaVideoModel(preset("tiny", attn_implementation="flash_attention_2"))


@pytest.mark.parametrize("mode, tokens", [("one_token", 1), ("three_tokens", 3)])
def test_llavaction_checkpoint_with_action_supervision(tmp_path, mode, tokens):
    model = tiny(vision_supervision=mode, action_types=(8, 8, 40))
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert tuple(f.get_tensor("model.action_supervision").shape) == (tokens, 128)
        assert tuple(f.get_tensor("action_head.weight").shape) == (40, 128)
        assert "verb_head.bias" not in f.keys()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["action_types"] == "8,8,40" and config["vision_supervision"] == mode
    loaded = LlavaVideoModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.noun_head.weight, model.noun_head.weight)
    assert torch.equal(loaded.action_supervision, model.action_supervision)


@pytest.mark.parametrize("mode, tokens", [("one_token", 1), ("three_tokens", 3), ("newline", 0)])
def test_action_heads_read_the_action_tokens(mode, tokens):
    model = tiny(vision_supervision=mode, action_types=(8, 9, 40))
    assert model.config.visual_tokens(3) == 3 * 20 + tokens
    ids, pixels, mask = inputs()
    out = model.last_logits(ids, pixels, mask, head_layers="all")
    assert len(out.action_logits) == 4  # one triple per LLM layer
    verb, noun, action = out.action_logits[-1]
    assert verb.shape == (2, 8) and noun.shape == (2, 9) and action.shape == (2, 40)
    # the heads read the token(s) that end the visual tokens, right before the text that follows the placeholder
    visual = model.config.visual_tokens(3)
    place = torch.tensor([2, 5])
    last = out.hidden_states[torch.arange(2), place + visual - 1]
    expected_action = model.action_head(last)
    assert torch.allclose(action, expected_action, atol=1e-5)
    if mode == "three_tokens":
        assert torch.allclose(verb, model.verb_head(out.hidden_states[torch.arange(2), place + visual - 3]), atol=1e-5)
    first_only = model.last_logits(ids, pixels, mask, head_layers="first").action_logits
    assert len(first_only) == 1 and not torch.allclose(first_only[0][0], verb)
    last_only = model.last_logits(ids, pixels, mask, head_layers="last").action_logits
    assert len(last_only) == 1 and torch.allclose(last_only[0][0], verb, atol=1e-5)


def test_action_supervision_added_to_a_plain_checkpoint(tmp_path):
    tiny().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model.action_supervision"):
        LlavaVideoModel.from_pretrained(tmp_path, vision_supervision="one_token", action_types=(8, 8, 40))
    from llavaction.model.llava_video.checkpoint import ACTION_SUPERVISION_NAMES

    model = LlavaVideoModel.from_pretrained(
        tmp_path, vision_supervision="one_token", action_types=(8, 8, 40), allow_missing=ACTION_SUPERVISION_NAMES
    )
    assert torch.isfinite(model.verb_head.weight).all() and 0 < model.verb_head.weight.std() < 0.1
    assert torch.isfinite(model.action_supervision).all() and model.action_supervision.abs().sum() > 0
