"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

Token layout (ids read from the config):

- image: `<vision_start> <image_pad> × (t·h·w / merge²) <vision_end>`, with `image_grid_thw = [t, h, w]` in patches;
- video (Qwen2-VL, Qwen2.5-VL): one block `<vision_start> <video_pad> × (t·h·w / merge²) <vision_end>`. Each of the
  `t` temporal patches (`temporal_patch_size` frames) is an LLM-side frame group of `h·w / merge²` tokens, in order;
- video (Qwen3-VL): one `<t seconds> <vision_start> <video_pad> × (h·w / merge²) <vision_end>` block per temporal
  patch, so the frame groups are separated by text (the model's `get_rope_index` splits `video_grid_thw` per frame).

`batch_spans` gives one image span per image and one video span per frame group (`Span.frame` = temporal patch
index). It reads the grids, or, for the prefill call inside `generate` (which passes `mm_encoder_outputs` instead of
pixels and grids), the per-item encoder outputs and each row's M-RoPE `position_ids`. Positions: see `mrope.py`.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn

from ..media.video import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, frames_to_tensor, qwen_video_patches
from ..spans import Span
from .common import MediaItems, encoder_output_counts, expand_placeholders
from .mrope import MRopeAdapter

HALF = (0.5, 0.5, 0.5)


class QwenVisionAdapter(MRopeAdapter):
    """Shared image/video handling of the Qwen vision families (also used by Qwen2.5-Omni)."""

    modalities: ClassVar[tuple[str, ...]] = ("image", "video")
    image_mean: ClassVar[tuple[float, ...]] = OPENAI_CLIP_MEAN
    image_std: ClassVar[tuple[float, ...]] = OPENAI_CLIP_STD
    #: the processors' default per-frame pixel range for video, in units of (patch * merge)**2
    video_min_tokens: ClassVar[int] = 128
    video_max_tokens: ClassVar[int] = 768

    @property
    def rope_owner(self) -> nn.Module:
        return self.inner_model

    @property
    def vision_config(self) -> Any:
        return self.config.vision_config

    @property
    def merge_size(self) -> int:
        return int(self.vision_config.spatial_merge_size)

    @property
    def modality_token_ids(self) -> dict[str, int]:
        return {
            "image": self.config_token_id("image_token_id", "image_token_index"),
            "video": self.config_token_id("video_token_id", "video_token_index"),
        }

    # -- spans -------------------------------------------------------------------------------------------------
    media_input_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "image": ("image_grid_thw", "mm_encoder_outputs"),
        "video": ("video_grid_thw", "mm_encoder_outputs"),
    }

    def media_items(self, modality: str, model_inputs: dict[str, Any]) -> MediaItems | None:
        """Images and videos from the grids (`(items of all rows, 3)`), or, inside `generate` (which passes encoder
        outputs instead of pixels and grids), from the per-item encoder outputs; a video from encoder outputs is one
        group here and split into frame groups per row by `row_groups`."""
        if modality not in ("image", "video"):
            return None
        name = f"{modality}_grid_thw"
        merge2 = self.merge_size**2
        grid = model_inputs.get(name)
        if grid is not None:
            rows = torch.as_tensor(grid).reshape(-1, 3).tolist()
            if modality == "image":
                return MediaItems([[t * h * w // merge2] for t, h, w in rows], name)
            return MediaItems([[h * w // merge2] * t for t, h, w in rows], name)
        counts = encoder_output_counts(model_inputs, modality)
        if counts is None:
            return None
        return MediaItems([[n] for n in counts], "mm_encoder_outputs")

    def row_groups(
        self,
        modality: str,
        items: MediaItems,
        start: int,
        stop: int,
        row: int,
        placeholder_mask: torch.Tensor,
        model_inputs: dict[str, Any],
    ) -> list[list[int]]:
        """Videos known from encoder outputs only are split into frame groups by the row's own M-RoPE positions."""
        groups = items.groups[start:stop]
        if modality != "video" or items.source != "mm_encoder_outputs" or not groups:
            return groups
        position_ids = model_inputs.get("position_ids")
        if position_ids is None:
            raise ValueError("splitting a video into frame groups needs video_grid_thw or the M-RoPE position_ids")
        pos = torch.as_tensor(position_ids)
        if pos.dim() != 3 or pos.shape[0] not in (3, 4):
            raise ValueError(f"expected M-RoPE position_ids of shape (3 or 4, batch, seq), got {tuple(pos.shape)}")
        pos = pos[:, row if pos.shape[1] > 1 else 0]  # (3 or 4, seq): this row's own positions
        return _frame_groups_from_positions(placeholder_mask, [g[0] for g in groups], pos[-2], pos[-1])

    def vision_spans(self, ids: torch.Tensor, model_inputs: dict[str, Any]) -> list[Span]:
        """The image and video spans of one sequence (kept for callers of earlier versions; use `spans`)."""
        inputs = {k: v for k, v in model_inputs.items() if k != "input_ids"}
        return [s for s in self.spans(ids, **inputs).spans if s.modality in ("image", "video")]

    # -- encoders, features, positions -------------------------------------------------------------------------
    @property
    def vision_encoder(self) -> nn.Module:
        """The vision transformer `visual` (patch embedding, `blocks`, patch `merger`)."""
        return self.inner_model.visual

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.vision_encoder.blocks

    def feature_modules(self) -> dict[str, nn.Module]:
        """The vision `merger` for both images and videos: its `(merged tokens, hidden)` output is the LLM input
        (Qwen2.5-VL and Qwen2.5-Omni reorder its rows from window to raster order first)."""
        return {"image": self.vision_encoder.merger, "video": self.vision_encoder.merger}

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`mm_token_type_ids` of `input_ids`: 0 text, 1 image, 2 video."""
        tokens = self.modality_token_ids
        types = torch.zeros_like(input_ids)
        types[input_ids == tokens["image"]] = 1
        types[input_ids == tokens["video"]] = 2
        return types

    def rope_index(self, input_ids: torch.Tensor, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        grids = {
            name: model_inputs[name]
            for name in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
            if model_inputs.get(name) is not None
        }
        if "image_grid_thw" not in grids and "video_grid_thw" not in grids:
            return _text_positions(input_ids, self.modality_token_ids)
        types = model_inputs.get("mm_token_type_ids")
        types = self.token_types(input_ids) if types is None else types
        positions, deltas = self.inner_model.get_rope_index(input_ids, mm_token_type_ids=types, **grids)
        return positions, int(deltas.reshape(-1)[0])

    # -- inputs ------------------------------------------------------------------------------------------------
    def default_image_processor(self) -> Any:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        vc = self.vision_config
        return Qwen2VLImageProcessorPil(
            patch_size=vc.patch_size,
            merge_size=vc.spatial_merge_size,
            temporal_patch_size=vc.temporal_patch_size,
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )

    def add_images(self, ids, images, image_processor):
        processor = image_processor if image_processor is not None else self.default_image_processor()
        encoded = processor(images=images, return_tensors="pt")
        grid = encoded["image_grid_thw"]
        counts = [int(n) for n in grid.prod(-1) // self.merge_size**2]
        image_id = self.modality_token_ids["image"]
        ids = expand_placeholders(ids, image_id, [[image_id] * n for n in counts], modality="image")
        return ids, {"pixel_values": encoded["pixel_values"], "image_grid_thw": grid}

    def video_frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The processors' default frame size: multiples of patch·merge within the default pixel range."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor = self.vision_config.patch_size * self.merge_size
        return smart_resize(
            height,
            width,
            factor=factor,
            min_pixels=self.video_min_tokens * factor**2,
            max_pixels=self.video_max_tokens * factor**2,
        )

    def video_tensors(
        self, frames: list[Image.Image], size: tuple[int, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`pixel_values_videos (patches, dim)` and `video_grid_thw (1, 3)` for one video."""
        if size is None:
            size = self.video_frame_size(frames[0].height, frames[0].width)
        vc = self.vision_config
        patches, grid = qwen_video_patches(
            frames_to_tensor(frames, size),
            patch_size=vc.patch_size,
            merge_size=vc.spatial_merge_size,
            temporal_patch_size=vc.temporal_patch_size,
            mean=self.image_mean,
            std=self.image_std,
        )
        return patches, grid.unsqueeze(0)

    def seconds_per_grid(self, timestamps: list[float]) -> float:
        """Seconds spanned by one temporal patch, from the frame timestamps (1 frame/s when there is one frame)."""
        interval = (timestamps[-1] - timestamps[0]) / (len(timestamps) - 1) if len(timestamps) > 1 else 1.0
        return float(self.vision_config.temporal_patch_size * interval)

    def add_video(self, ids, frames, timestamps, size, tokenizer):
        patches, grid = self.video_tensors(frames, size)
        video_id = self.modality_token_ids["video"]
        count = int(grid.prod()) // self.merge_size**2
        ids = expand_placeholders(ids, video_id, [[video_id] * count], modality="video")
        return ids, {"pixel_values_videos": patches, "video_grid_thw": grid}

    def extra_text_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.accepts_forward_argument("mm_token_type_ids"):
            return {}
        return {"mm_token_type_ids": self.token_types(input_ids)}


class Qwen2VLAdapter(QwenVisionAdapter):
    family = "qwen2_vl"
    model_classes = ("Qwen2VLForConditionalGeneration", "Qwen2VLModel")


class Qwen2_5_VLAdapter(QwenVisionAdapter):
    family = "qwen2_5_vl"
    model_classes = ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel")

    def add_video(self, ids, frames, timestamps, size, tokenizer):
        ids, tensors = super().add_video(ids, frames, timestamps, size, tokenizer)
        tensors["second_per_grid_ts"] = torch.tensor([self.seconds_per_grid(timestamps)])
        return ids, tensors


class Qwen3VLAdapter(QwenVisionAdapter):
    family = "qwen3_vl"
    model_classes = ("Qwen3VLForConditionalGeneration", "Qwen3VLModel")
    image_mean = HALF
    image_std = HALF

    def add_video(self, ids, frames, timestamps, size, tokenizer):
        if tokenizer is None:
            raise ValueError("Qwen3-VL video prompts need the tokenizer (for the per-frame timestamps)")
        patches, grid = self.video_tensors(frames, size)
        grid_t, grid_h, grid_w = (int(v) for v in grid[0])
        tps = int(self.vision_config.temporal_patch_size)
        padded = timestamps + [timestamps[-1]] * (grid_t * tps - len(timestamps))
        start = self.config_token_id("vision_start_token_id")
        end = self.config_token_id("vision_end_token_id")
        video_id = self.modality_token_ids["video"]
        per_frame = grid_h * grid_w // self.merge_size**2
        replacement: list[int] = []
        for k in range(grid_t):
            # the processor's timestamp: mean of the first and last frame time of the temporal patch
            seconds = (padded[k * tps] + padded[k * tps + tps - 1]) / 2
            replacement += tokenizer.encode(f"<{seconds:.1f} seconds>", add_special_tokens=False)
            replacement += [start] + [video_id] * per_frame + [end]
        ids = expand_placeholders(ids, video_id, [replacement], modality="video", unwrap=(start, end))
        return ids, {"pixel_values_videos": patches, "video_grid_thw": grid}


def _text_positions(input_ids: torch.Tensor, token_ids: dict[str, int]) -> tuple[torch.Tensor, int]:
    """M-RoPE positions of a prompt without media: the token index in all three rows, delta 0."""
    if any(bool((input_ids == t).any()) for t in token_ids.values()):
        raise ValueError(
            "the prompt holds media placeholders: its M-RoPE positions need the grids (image_grid_thw / "
            "video_grid_thw, audio lengths) or the position_ids generate passes to the prefill"
        )
    seq = int(input_ids.shape[-1])
    positions = torch.arange(seq, device=input_ids.device).view(1, 1, seq).expand(3, 1, seq)
    return positions, 0


def _frame_groups_from_positions(
    video_mask: torch.Tensor, counts: list[int], height: torch.Tensor, width: torch.Tensor
) -> list[list[int]]:
    """Per-video frame-group sizes of one row without `video_grid_thw`, from the M-RoPE positions of its video tokens.

    Inside a frame group the (height, width) positions walk the merged grid in raster order, strictly increasing;
    a new group starts where that order restarts (consecutive frames of Qwen2-VL) or after text (Qwen3-VL frames).
    `video_mask`, `height` and `width` are the row's `(seq,)` placeholder mask and height/width position rows.
    """
    height_list, width_list = height.tolist(), width.tolist()
    where = video_mask.nonzero().flatten().tolist()
    if len(where) != sum(counts):
        raise ValueError(
            f"input_ids hold {len(where)} video placeholder tokens but mm_encoder_outputs hold {sum(counts)}"
        )
    groups: list[list[int]] = []
    start = 0
    for count in counts:
        item = where[start : start + count]
        start += count
        sizes = [1]
        for prev, cur in itertools.pairwise(item):
            restart = (height_list[cur], width_list[cur]) <= (height_list[prev], width_list[prev])
            if cur != prev + 1 or restart:
                sizes.append(1)
            else:
                sizes[-1] += 1
        if len(set(sizes)) != 1:
            raise ValueError(f"the video's M-RoPE positions give frame groups of unequal sizes {sizes}")
        groups.append(sizes)
    return groups
