"""Frames to pixel values as transformers' image and video processors make them on the CPU, where serving engines
(vLLM) and transformers' own pipelines run them: uint8 frames resized as uint8 (torch's native antialiased bicubic
kernel, which rounds between its two passes; a float resize, the processors' GPU path, differs by up to 25 levels),
then normalised in their fused form, (x - 255 mean) / (255 std)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def processor_resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, height, width] (the same tensor when no resize is needed), on the CPU as
    the processors resize, returned on the frames' device."""
    if frames.shape[-2:] == (height, width):
        return frames
    resized = F.interpolate(frames.cpu(), size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.to(frames.device)


def normalize(frames: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32, (x - 255 mean) / (255 std) as the processors compute it (bit for bit)."""
    scale = torch.tensor(std, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) * 255.0
    shift = torch.tensor(mean, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1) * 255.0
    return (frames.float() - shift) / scale
