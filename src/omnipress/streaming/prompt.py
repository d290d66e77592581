"""Whole prompts in chunks, for prefix reuse: positions, media digests, and the model inputs of a token range.

A prompt (the model inputs of one unpadded row, as `omnipress.generation.build_inputs` or an adapter's `build_inputs`
gives them) is prefilled in chunks `[a, b)` through the model's own forward, with the positions of the whole prompt,
so that the chunks give the cache of one prefill. A chunk never cuts a media item (`snap`). Each token gets a
*signature*: its id, or for media tokens the negative id of the item's pixel content, so two prompts share a prefix
exactly when their leading tokens and images are the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..adapters import FamilyAdapter, MRopeAdapter
from ..spans import ModalitySpans

MEDIA_INPUTS = {
    "image": ("pixel_values", "image_grid_thw", "image_sizes", "batch_num_images"),
    "video": ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "video_second_per_grid"),
}


@dataclass
class PromptInputs:
    """One prompt ready for chunked prefill.

    Attributes
    ----------
    inputs:
        The model inputs (`input_ids` `(1, n)`, media tensors), on the model's device.
    spans:
        Where its media sit.
    positions:
        `(rows, n)` positions of the whole prompt (3 rows for M-RoPE, 1 for 1-D RoPE).
    signature:
        `(n,)` token ids, media tokens replaced by `-(1 + content id)`.
    """

    inputs: dict[str, Any]
    spans: ModalitySpans
    positions: torch.Tensor
    signature: np.ndarray

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])

    @property
    def top(self) -> int:
        """Largest position of the prompt (generated tokens continue after it)."""
        return int(self.positions.max())


def prompt_inputs(
    adapter: FamilyAdapter,
    tokenizer: Any,
    content: Sequence[str | Image.Image],
    *,
    system: str | None = None,
    image_processor: Any = None,
    max_pixels: int | None = None,
) -> dict[str, torch.Tensor]:
    """Model inputs of one user turn whose `content` interleaves text and PIL images (one chat-template image item
    per image, in order), expanded by the family adapter; ready to generate.

    `max_pixels` (Qwen-VL only) caps the pixels of each image after resizing (fewer visual tokens).
    """
    items: list[dict[str, str]] = []
    images = []
    for part in content:
        if isinstance(part, Image.Image):
            items.append({"type": "image"})
            images.append(part.convert("RGB"))
        elif isinstance(part, str):
            items.append({"type": "text", "text": part})
        else:
            raise TypeError(f"prompt content is text or PIL images, got {type(part).__name__}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; one that writes image placeholders is needed")
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": items})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_pixels is not None:
        image_processor = qwen_image_processor(adapter, max_pixels)
    return adapter.build_inputs(ids, tokenizer=tokenizer, images=images, image_processor=image_processor)


def qwen_image_processor(adapter: FamilyAdapter, max_pixels: int) -> Any:
    """A Qwen-VL image processor that resizes images to at most `max_pixels` pixels."""
    if not isinstance(adapter, MRopeAdapter) or not hasattr(adapter.vision_config, "temporal_patch_size"):
        raise ValueError("max_pixels applies to the Qwen-VL image processor only")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vc = adapter.vision_config
    factor = vc.patch_size * vc.spatial_merge_size
    if max_pixels < factor**2 * 4:
        raise ValueError(f"max_pixels must be at least {factor**2 * 4}")
    return Qwen2VLImageProcessorPil(
        patch_size=vc.patch_size,
        merge_size=vc.spatial_merge_size,
        temporal_patch_size=vc.temporal_patch_size,
        image_mean=list(adapter.image_mean),
        image_std=list(adapter.image_std),
        size={"shortest_edge": factor**2 * 4, "longest_edge": int(max_pixels)},
    )


def prepare_prompt(
    adapter: FamilyAdapter, inputs: dict[str, Any], contents: dict[str, int], device: torch.device
) -> PromptInputs:
    """Positions, spans and signature of `inputs`; `contents` maps media digests to ids (updated in place)."""
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    ids = inputs["input_ids"]
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"prompts are one unpadded row: input_ids must be (1, n), got {tuple(ids.shape)}")
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and not bool(mask.all()):
        raise ValueError("prompts are one unpadded row: the attention mask has padding")
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    spans = adapter.spans(ids[0], **extra)
    n = int(ids.shape[1])
    if isinstance(adapter, MRopeAdapter):
        rope, _ = adapter.mrope_positions(ids, extra)  # (3, 1, n)
        positions = rope[:, 0].to(device)
    else:
        positions = torch.arange(n, device=device).unsqueeze(0)  # (1, n)
    signature = ids[0].cpu().numpy().astype(np.int64).copy()
    for modality in ("image", "video"):
        items = _item_digests(adapter, inputs, modality)
        for span in spans.of(modality):
            digest = f"{items[span.item] if span.item < len(items) else 'missing'}:{span.frame}"
            signature[span.start : span.end] = -(1 + contents.setdefault(digest, len(contents)))
    return PromptInputs(inputs, spans, positions, signature)


def _item_digests(adapter: FamilyAdapter, inputs: dict[str, Any], modality: str) -> list[str]:
    """A content digest per media item (image / video) of the prompt."""
    name = "pixel_values" if modality == "image" else "pixel_values_videos"
    pixels = inputs.get(name)
    if pixels is None:
        return []
    grid = inputs.get(f"{modality}_grid_thw")
    if grid is not None:  # Qwen-VL: the patch rows of all items, concatenated
        items = torch.split(pixels, [int(n) for n in grid.prod(-1).tolist()])
    else:
        items = list(pixels)
    return [hashlib.sha1(item.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for item in items]


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two signatures."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def snap(length: int, spans: ModalitySpans) -> int:
    """Move a cut that falls inside a media item back to the item's start."""
    for span in spans.spans:
        if span.start < length < span.end:
            return span.start
    return length


def chunk_inputs(prompt: PromptInputs, a: int, b: int) -> dict[str, Any]:
    """Keyword arguments of the model's forward for tokens `[a, b)` of `prompt` (positions of the whole prompt; the
    media items inside the chunk)."""
    inputs = prompt.inputs
    kwargs: dict[str, Any] = {
        "input_ids": inputs["input_ids"][:, a:b],
        "position_ids": prompt.positions[:, a:b].unsqueeze(1) if prompt.positions.shape[0] == 3 else None,
    }
    if kwargs["position_ids"] is None:
        kwargs["position_ids"] = prompt.positions[:, a:b]  # (1, b - a)
    if "mm_token_type_ids" in inputs:
        kwargs["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, a:b]
    for modality, names in MEDIA_INPUTS.items():
        spans = prompt.spans.of(modality)
        if any(s.start < b and s.end > a and not (a <= s.start and s.end <= b) for s in spans):
            raise ValueError(f"the chunk [{a}, {b}) cuts a {modality}")
        items = sorted({s.item for s in spans if a <= s.start and s.end <= b})
        if not items:
            continue
        grid = inputs.get(f"{modality}_grid_thw")
        if grid is not None and modality == "image":  # Qwen-VL images: their own patch rows and grid rows
            rows = np.concatenate([[0], np.cumsum(grid.prod(-1).cpu().numpy())])
            lo, hi = items[0], items[-1] + 1
            if items != list(range(lo, hi)):
                raise ValueError("the images of one chunk must be consecutive")
            kwargs["pixel_values"] = inputs["pixel_values"][int(rows[lo]) : int(rows[hi])]
            kwargs["image_grid_thw"] = grid[lo:hi]
            continue
        total = len({s.item for s in spans})
        if len(items) != total:
            raise ValueError(f"{modality} inputs of this family can only be prefilled in one chunk")
        kwargs.update({k: inputs[k] for k in names if k in inputs})
    return kwargs
