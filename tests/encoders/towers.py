"""Tiny vision towers of every supported family, and real video frames in the form each tower takes.

SigLIP (LLaVA-OneVision) and CLIP (LLaVA-1.5) towers take `(frames, 3, H, W)` pixels; the Qwen-VL towers take the
packed patches of a video with its `grid_thw` (one frame = one temporal patch group).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from omnipress.testing import real_video_frames, tiny_inputs, tiny_model

TOWERS = ("siglip", "clip", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
_FAMILY = {"siglip": "llava_onevision", "clip": "llava"}
SIDE = 112  # SigLIP/CLIP frame side: 8 x 8 patches of 14 px


def build_tower(kind: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """`(tower, vlm)`: the bare vision tower of a tiny random-weight VLM (`SiglipVisionModel`, `CLIPVisionModel`, the
    Qwen ViTs) and the VLM holding it."""
    if kind in _FAMILY:
        model = tiny_model(_FAMILY[kind], seed=seed, vision_config={"image_size": SIDE})
        return model.model.vision_tower, model
    model = tiny_model(kind, seed=seed)
    return model.model.visual, model


def _pixels(frames: list) -> torch.Tensor:
    arrays = [np.asarray(f.resize((SIDE, SIDE)), dtype=np.float32) for f in frames]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0  # (frames, 3, H, W) in [-1, 1]


MAX_FRAMES = 4


@functools.cache
def _video(kind: str) -> tuple[tuple, dict[str, Any]]:
    """The first `MAX_FRAMES` frames of the real video as one tower call (decoded once per tower kind)."""
    if kind in _FAMILY:
        images, _ = real_video_frames(MAX_FRAMES, fps=4.0)
        return (_pixels(images),), {}
    temporal = 2  # video frames per temporal patch group
    inputs = tiny_inputs(kind, build_tower(kind)[1], image=False, video_frames=temporal * MAX_FRAMES)
    return (inputs["pixel_values_videos"],), {"grid_thw": inputs["video_grid_thw"]}


def frame_inputs(kind: str, frames: int, offset: int = 0) -> tuple[tuple, dict[str, Any]]:
    """`(args, kwargs)` of one tower call on `frames` consecutive real video frames, starting `offset` frames in.

    For the Qwen towers a frame is a temporal patch group (two video frames).
    """
    if offset + frames > MAX_FRAMES:
        raise ValueError(f"at most {MAX_FRAMES} frames")
    (pixels,), kwargs = _video(kind)
    if not kwargs:
        return (pixels[offset : offset + frames],), {}
    grid = kwargs["grid_thw"].clone()
    per_frame = int(grid[0, 1] * grid[0, 2])
    grid[0, 0] = frames
    return (pixels[offset * per_frame : (offset + frames) * per_frame],), {"grid_thw": grid}


def outputs(output: Any) -> list[torch.Tensor]:
    """Every feature tensor a tower returns: `last_hidden_state`, and for the Qwen towers the merged patches
    (`pooler_output`) and Qwen3-VL's deepstack features."""
    out = [output.last_hidden_state]
    if output.last_hidden_state.dim() == 2:  # Qwen: packed rows
        out.append(output.pooler_output)
        out.extend(getattr(output, "deepstack_features", None) or [])
    return out


def assert_close_outputs(actual: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    for a, e in zip(outputs(actual), outputs(expected), strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
