"""LLaVA-1.5 and LLaVA-OneVision (1-D RoPE; the base `continuation_position_ids` applies).

Token layout (ids read from the config):

- LLaVA-1.5: each `<image>` becomes `(H/patch)·(W/patch)` tokens (576 for a 336² CLIP-L/14 tower with the CLS
  token dropped by the "default" feature strategy).
- LLaVA-OneVision image: anyres tiling. One image alone gets `p²` base tokens (`p = image_size / patch_size`) plus
  the unpadded tile grid, downscaled when larger than `anyres_max_9` allows, with one newline token per row. In a
  multi-image sample (`batch_num_images > 1`) each image is one crop: `p² + 1` tokens.
- LLaVA-OneVision video: every frame is pooled 2×2 to `ceil(p/2)²` tokens, frames follow each other, and one newline
  token closes the video. `batch_spans` gives one span per frame; the closing newline belongs to the last frame's
  span.

`batch_spans` reads `pixel_values` / `image_sizes` / `batch_num_images` / `pixel_values_videos`, or the per-item
`mm_encoder_outputs` that `generate` passes to the prefill instead.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..media.video import frames_to_tensor, normalize_frames
from .common import FamilyAdapter, MediaItems, encoder_output_counts, expand_placeholders

HALF = (0.5, 0.5, 0.5)


class _LlavaBase(FamilyAdapter):
    @property
    def patches_per_side(self) -> int:
        vc = self.config.vision_config
        return int(vc.image_size) // int(vc.patch_size)

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision tower (`CLIPVisionModel` for LLaVA-1.5, `SiglipVisionModel` for LLaVA-OneVision)."""
        return self.inner_model.vision_tower

    @property
    def vision_blocks(self) -> nn.ModuleList:
        """The tower's encoder layers (all of them run, also those after `vision_feature_layer`)."""
        tower = self.vision_encoder
        tower = getattr(tower, "vision_model", tower)  # older transformers wrap the transformer once more
        return tower.encoder.layers

    def feature_modules(self) -> dict[str, nn.Module]:
        """The `multi_modal_projector`, whose output rows are the image (and video) features."""
        return {m: self.inner_model.multi_modal_projector for m in self.modalities}


class LlavaAdapter(_LlavaBase):
    family = "llava"
    model_classes = ("LlavaForConditionalGeneration", "LlavaModel")
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    @property
    def modality_token_ids(self) -> dict[str, int]:
        return {"image": self.config_token_id("image_token_id", "image_token_index")}

    def tokens_per_image(self, height: int, width: int) -> int:
        """Image tokens for a `height × width` pixel input: one per patch, plus the CLS token of a CLIP tower
        unless the "default" feature strategy drops it."""
        vc = self.config.vision_config
        patch = int(vc.patch_size)
        count = (height // patch) * (width // patch)
        has_cls = getattr(vc, "model_type", "") == "clip_vision_model"
        if has_cls and self.config.vision_feature_select_strategy != "default":
            count += 1
        if not has_cls and self.config.vision_feature_select_strategy == "default":
            count -= 1
        return count

    media_input_names: ClassVar[dict[str, tuple[str, ...]]] = {"image": ("pixel_values", "mm_encoder_outputs")}

    def media_items(self, modality: str, model_inputs: dict[str, Any]) -> MediaItems | None:
        """One group per image: `pixel_values` `(images of all rows, 3, H, W)`, or the encoder outputs."""
        if modality != "image":
            return None
        pixel_values = model_inputs.get("pixel_values")
        if pixel_values is not None:
            height, width = pixel_values.shape[-2:]
            count = self.tokens_per_image(int(height), int(width))
            return MediaItems([[count]] * int(pixel_values.shape[0]), "pixel_values")
        counts = encoder_output_counts(model_inputs, "image")
        return None if counts is None else MediaItems([[n] for n in counts], "mm_encoder_outputs")

    def add_images(self, ids, images, image_processor):
        if image_processor is None:
            from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

            side = int(self.config.vision_config.image_size)
            image_processor = CLIPImageProcessorPil(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            )
        pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
        count = self.tokens_per_image(int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        image_id = self.modality_token_ids["image"]
        ids = expand_placeholders(ids, image_id, [[image_id] * count] * len(images), modality="image")
        return ids, {"pixel_values": pixel_values}


class LlavaOnevisionAdapter(_LlavaBase):
    family = "llava_onevision"
    model_classes = ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionModel")
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")

    @property
    def modality_token_ids(self) -> dict[str, int]:
        return {
            "image": self.config_token_id("image_token_id", "image_token_index"),
            "video": self.config_token_id("video_token_id", "video_token_index"),
        }

    @property
    def tokens_per_video_frame(self) -> int:
        return math.ceil(self.patches_per_side / 2) ** 2

    def tokens_per_image(self, height: int, width: int, *, multi_image: bool = False) -> int:
        """Image tokens of an `height × width` (original pixels) image, as the model packs them."""
        return llava_onevision_image_tokens(
            height,
            width,
            image_size=int(self.config.vision_config.image_size),
            patch_size=int(self.config.vision_config.patch_size),
            grid_pinpoints=[list(p) for p in self.config.image_grid_pinpoints],
            max_tiles=int(str(getattr(self.config, "vision_aspect_ratio", "anyres_max_9")).removeprefix("anyres_max_")),
            multi_image=multi_image,
        )

    media_input_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "image": ("image_sizes", "mm_encoder_outputs"),
        "video": ("pixel_values_videos", "mm_encoder_outputs"),
    }

    def media_items(self, modality: str, model_inputs: dict[str, Any]) -> MediaItems | None:
        """Images from `image_sizes` `(images of all rows, 2)` and `batch_num_images` (images per sample with
        images; a sample of several images packs each as one crop), videos from `pixel_values_videos`
        `(videos, frames, 3, H, W)`, or either from the encoder outputs."""
        if modality == "image":
            return self._image_items(model_inputs)
        if modality == "video":
            return self._video_items(model_inputs)
        return None

    def _image_items(self, model_inputs: dict[str, Any]) -> MediaItems | None:
        image_sizes = model_inputs.get("image_sizes")
        if image_sizes is not None:
            sizes = torch.as_tensor(image_sizes).reshape(-1, 2).tolist()
            batch_num = model_inputs.get("batch_num_images")
            if batch_num is None:
                multi = [False] * len(sizes)  # what the model assumes without batch_num_images
            else:
                multi = [n > 1 for n in torch.as_tensor(batch_num).reshape(-1).tolist() for _ in range(n)]
            if len(multi) != len(sizes):
                raise ValueError(f"batch_num_images covers {len(multi)} images but image_sizes has {len(sizes)}")
            return MediaItems(
                [[self.tokens_per_image(h, w, multi_image=m)] for (h, w), m in zip(sizes, multi)], "image_sizes"
            )
        counts = encoder_output_counts(model_inputs, "image")
        return None if counts is None else MediaItems([[n] for n in counts], "mm_encoder_outputs")

    def _video_items(self, model_inputs: dict[str, Any]) -> MediaItems | None:
        per_frame = self.tokens_per_video_frame
        videos = model_inputs.get("pixel_values_videos")
        if videos is not None:
            counts, source = [int(videos.shape[1]) * per_frame + 1] * int(videos.shape[0]), "pixel_values_videos"
        elif (counts := encoder_output_counts(model_inputs, "video")) is not None:
            source = "mm_encoder_outputs"
        else:
            return None
        groups = []
        for count in counts:
            if (count - 1) % per_frame or count < per_frame + 1:
                raise ValueError(f"a video of {count} tokens is not frames of {per_frame} tokens plus one newline")
            frames = (count - 1) // per_frame
            groups.append([per_frame] * (frames - 1) + [per_frame + 1])  # the closing newline joins the last frame
        return MediaItems(groups, source)

    def add_images(self, ids, images, image_processor):
        if image_processor is None:
            from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
                LlavaOnevisionImageProcessorPil,
            )

            side = int(self.config.vision_config.image_size)
            image_processor = LlavaOnevisionImageProcessorPil(
                size={"height": side, "width": side},
                image_grid_pinpoints=[list(p) for p in self.config.image_grid_pinpoints],
                image_mean=list(HALF),
                image_std=list(HALF),
            )
        # one sample holding all the prompt's images: several images are packed as one crop each (batch_num_images)
        encoded = image_processor(images=[list(images)], return_tensors="pt")
        batch_num = torch.as_tensor(encoded.get("batch_num_images", [len(images)])).reshape(-1)
        out = {
            "pixel_values": encoded["pixel_values"],  # (images, patches, 3, side, side)
            "image_sizes": encoded["image_sizes"],
            "batch_num_images": batch_num,
        }
        counts = [n for group in self._image_items(out).groups for n in group]
        image_id = self.modality_token_ids["image"]
        ids = expand_placeholders(ids, image_id, [[image_id] * n for n in counts], modality="image")
        return ids, out

    def add_video(self, ids, frames, timestamps, size, tokenizer):
        side = int(self.config.vision_config.image_size)
        pixels = normalize_frames(frames_to_tensor(frames, size or (side, side)), HALF, HALF).unsqueeze(0)
        count = len(frames) * self.tokens_per_video_frame + 1  # + the closing newline token
        video_id = self.modality_token_ids["video"]
        ids = expand_placeholders(ids, video_id, [[video_id] * count], modality="video")
        return ids, {"pixel_values_videos": pixels}  # (1, frames, 3, side, side)


def llava_onevision_image_tokens(
    height: int,
    width: int,
    *,
    image_size: int,
    patch_size: int,
    grid_pinpoints: list[list[int]],
    max_tiles: int = 9,
    multi_image: bool = False,
) -> int:
    """LLM tokens of one LLaVA-OneVision image of `height × width` original pixels (anyres packing).

    Mirrors `LlavaOnevisionModel.pack_image_features`: the base crop gives `p²` tokens; the tiles of the best
    pinpoint resolution form a `(rows·p) × (cols·p)` feature grid, cropped back to the image's aspect ratio
    ("unpadding"), bilinearly downscaled when it exceeds `max_tiles` crops' worth of features by more than 10 %,
    and closed by one newline token per row. A multi-image sample uses one crop per image: `p² + 1`.
    """
    from transformers.image_processing_utils import select_best_resolution

    side = image_size // patch_size  # p
    if multi_image:
        return side * side + 1
    best_h, best_w = select_best_resolution((height, width), grid_pinpoints)
    cur_h, cur_w = (best_h // image_size) * side, (best_w // image_size) * side
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(width * (cur_h / height), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    ratio = math.sqrt(cur_h * cur_w / (max_tiles * side * side))
    if ratio > 1.1:
        cur_h, cur_w = int(cur_h // ratio), int(cur_w // ratio)
    return side * side + cur_h * (cur_w + 1)
