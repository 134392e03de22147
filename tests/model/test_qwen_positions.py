"""The Qwen backbones' M-RoPE positions by the released models' rule: against an implementation written token by
token from the rule's description (every case, long sparse clips included), and against the installed transformers'
get_rope_index where the two rules agree (Qwen3-VL always; Qwen2.5-VL while a video's time extent stays below its
spatial extent)."""

import pytest
import torch

from llavaction.model.qwen_vl.positions import mrope_positions

VIDEO = 9


def described(tokens: list[int], grids, seconds_per_group: float, tokens_per_second: float) -> list[list[int]]:
    """The rule as the Qwen2.5-VL report describes it, one token at a time: text continues one past the largest
    position so far; a block's tokens take (time, row, column) offsets from its first position."""
    out, largest, index, block = [], -1, 0, 0
    while index < len(tokens):
        if tokens[index] != VIDEO:
            largest += 1
            out.append([largest] * 3)
            index += 1
            continue
        groups, rows, columns = grids[block]
        start = largest + 1
        for t in range(groups):
            for r in range(rows):
                for c in range(columns):
                    out.append([start + int(t * seconds_per_group * tokens_per_second), start + r, start + c])
        largest = max(max(p) for p in out)
        index += groups * rows * columns
        block += 1
    return [list(axis) for axis in zip(*out)]


def row(text_before: int, grids, text_between: int, text_after: int) -> list[int]:
    ids = list(range(100, 100 + text_before))
    for i, (t, h, w) in enumerate(grids):
        if i:
            ids += list(range(200, 200 + text_between))
        ids += [VIDEO] * (t * h * w)
    return ids + list(range(300, 300 + text_after))


@pytest.mark.parametrize(
    "grids, seconds, per_second",
    [
        ([(8, 14, 14)], 1.0, 2.0),  # 16 frames at 2 fps, 392 px: time reaches the spatial extent
        ([(4, 14, 14)], 1.0, 2.0),
        ([(32, 8, 8)], 1.0, 2.0),  # a long sparse clip: time far past the spatial extent
        ([(12, 4, 4)], 2 / 3, 2.0),
        ([(1, 6, 6)] * 4, 0.0, 2.0),  # Qwen3-VL: one block a temporal group
    ],
)
def test_positions_follow_the_described_rule(grids, seconds, per_second):
    ids = row(5, grids, 3, 7)
    padded = torch.tensor([[0, 0] + ids, ids + [0, 0]])
    mask = torch.tensor([[0, 0] + [1] * len(ids), [1] * len(ids) + [0, 0]])
    positions = mrope_positions(padded, mask, VIDEO, [grids, grids], [seconds, seconds], per_second)
    expected = torch.tensor(described(ids, grids, seconds, per_second))
    assert torch.equal(positions[:, 0, 2:], expected) and torch.equal(positions[:, 1, :-2], expected)


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "qwen3_vl"])
def test_positions_equal_transformers_where_the_rules_agree(backbone):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    from llavaction.model.qwen_vl.presets import qwen_preset

    hf = qwen_preset(backbone, "tiny").hf | {"video_token_id": VIDEO}
    config = (Qwen2_5_VLConfig if backbone == "qwen2_5_vl" else Qwen3VLConfig)(**hf)
    model = (Qwen2_5_VLModel if backbone == "qwen2_5_vl" else Qwen3VLModel)._from_config(config)
    groups, rows, columns = 4, 8, 8  # merged 4 x 4; Qwen2.5-VL's time 0..3 stays below it at 0.5 s a group
    seconds = 0.5
    blocks = (
        [(groups, rows // 2, columns // 2)] if backbone == "qwen2_5_vl" else [(1, rows // 2, columns // 2)] * groups
    )
    ids = torch.tensor([row(4, blocks, 2, 5)])
    mask = torch.ones_like(ids)
    extra = {"second_per_grid_ts": torch.tensor([seconds])} if backbone == "qwen2_5_vl" else {}
    theirs, _ = model.get_rope_index(
        ids,
        (ids == VIDEO).int() * 2,
        video_grid_thw=torch.tensor([[groups, rows, columns]]),
        attention_mask=mask,
        **extra,
    )
    ours = mrope_positions(
        ids, mask, VIDEO, [blocks], [seconds], float(hf["vision_config"].get("tokens_per_second", 1))
    )
    assert torch.equal(ours, theirs)
