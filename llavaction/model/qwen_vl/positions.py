"""The Qwen backbones' M-RoPE positions ([3, B, S]: time, height, width), by the released models' rule, here rather
than from the installed transformers (whose Qwen2.5-VL rule changed in 5.x, see below):

- text: the three rows equal, one a token, starting one past the largest position before it;
- a vision block of grid (t, h, w) merged tokens starting at s: time s + int(t_index * seconds_per_group *
  tokens_per_second) (Qwen2.5-VL; Qwen3-VL's blocks are one temporal group each, whose time is carried by its
  timestamp text, so t = 1 and the time row is s), height s + row, width s + column.

So the text after a video resumes one past the video's largest position, its time included, as the released
Qwen2.5-VL (transformers 4.5x) and vLLM place it; transformers 5.2x resumes at s + max(h, w) instead, which differs
when int((t - 1) * seconds_per_group * tokens_per_second) >= max(h, w): long clips with sparse frames."""

from __future__ import annotations

import torch


def vision_runs(is_video: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive True values of a 1-D mask."""
    edges = torch.diff(is_video.int(), prepend=is_video.new_zeros(1).int(), append=is_video.new_zeros(1).int())
    starts, ends = (edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()
    return list(zip(starts, ends))


def row_positions(
    ids: torch.Tensor,
    video_token_id: int,
    grids: list[tuple[int, int, int]],
    seconds_per_group: float,
    tokens_per_second: float,
) -> torch.Tensor:
    """[3, L] positions of one row's real tokens; grids: the (t, h, w) merged-token grid of each of its vision
    blocks in order (a block is a run of video tokens)."""
    runs = vision_runs(ids == video_token_id)
    if len(runs) != len(grids):
        raise ValueError(f"a row holds {len(runs)} vision blocks but {len(grids)} grids are given")
    pieces, position, cursor = [], 0, 0
    for (start, end), (groups, rows, columns) in zip(runs, grids):
        if end - start != groups * rows * columns:
            raise ValueError(f"a vision block of {end - start} tokens for a {groups} x {rows} x {columns} grid")
        pieces.append(torch.arange(start - cursor).expand(3, -1) + position)
        position += start - cursor
        time = (torch.arange(groups, dtype=torch.float64) * seconds_per_group * tokens_per_second).long()
        grid = torch.stack(
            [
                time.view(-1, 1, 1).expand(groups, rows, columns),
                torch.arange(rows).view(1, -1, 1).expand(groups, rows, columns),
                torch.arange(columns).view(1, 1, -1).expand(groups, rows, columns),
            ]
        ).flatten(1)
        pieces.append(grid + position)
        position = int(pieces[-1].max()) + 1
        cursor = end
    pieces.append(torch.arange(len(ids) - cursor).expand(3, -1) + position)
    return torch.cat(pieces, dim=1)


def mrope_positions(
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    video_token_id: int,
    grids: list[list[tuple[int, int, int]]],
    seconds_per_group: list[float],
    tokens_per_second: float,
) -> torch.Tensor:
    """[3, B, S] positions of right- or left-padded rows (padding at 1, as transformers leaves it); grids[b]: the
    merged-token grids of row b's vision blocks."""
    positions = torch.ones(3, *input_ids.shape, dtype=torch.long, device=input_ids.device)
    for row, (ids, real) in enumerate(zip(input_ids, mask.bool())):
        found = row_positions(ids[real].cpu(), video_token_id, grids[row], seconds_per_group[row], tokens_per_second)
        positions[:, row, real] = found.to(positions.device)
    return positions
