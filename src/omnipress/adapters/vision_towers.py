"""Bare vision towers: a vision encoder on its own, without a language model.

Encoder-stage methods (`op.STCCacher`, `op.ToMe`) take a whole VLM or its bare tower alike::

    tower = model.model.vision_tower            # SiglipVisionModel of a LLaVA-OneVision
    with op.STCCacher()(tower):
        tower(pixel_values)

| family | model classes |
|---|---|
| siglip_vision | `SiglipVisionModel` (LLaVA-OneVision's tower) |
| clip_vision | `CLIPVisionModel` (LLaVA-1.5's tower) |
| qwen_vision | `Qwen2VisionTransformerPretrainedModel`, `Qwen2_5_VisionTransformerPretrainedModel`,
  `Qwen3VLVisionModel` |

These adapters have no language model (`has_language_model = False`): the session installs nothing for one, and
methods of the token and KV stages, which need one, get a clear error.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..spans import ModalitySpans
from .common import FamilyAdapter


class VisionTowerAdapter(FamilyAdapter):
    """Base of the bare-tower adapters: the model *is* the vision encoder."""

    has_language_model: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = ()

    def _no_language_model(self) -> ValueError:
        return ValueError(
            f"{type(self.model).__name__} is a bare vision tower without a language model: only encoder-stage "
            "methods (STCCacher, ToMe) apply to it; apply token and KV methods to the whole VLM"
        )

    @property
    def language_model(self) -> nn.Module:
        raise self._no_language_model()

    @property
    def decoder_layers(self) -> nn.ModuleList:
        raise self._no_language_model()

    @property
    def attention_modules(self) -> list[nn.Module]:
        return []

    @property
    def text_config(self) -> Any:
        raise self._no_language_model()

    def batch_spans(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **model_inputs: Any
    ) -> list[ModalitySpans]:
        raise self._no_language_model()

    @property
    def vision_encoder(self) -> nn.Module:
        return self.model

    def feature_modules(self) -> dict[str, nn.Module]:
        """None: a bare tower's outputs enter no language model."""
        return {}


class SiglipVisionAdapter(VisionTowerAdapter):
    """`SiglipVisionModel`: pre-LN encoder layers (`layer_norm1`, `self_attn`, `layer_norm2`, `mlp`)."""

    family = "siglip_vision"
    model_classes = ("SiglipVisionModel",)

    @property
    def vision_blocks(self) -> nn.ModuleList:
        tower = getattr(self.model, "vision_model", self.model)  # older transformers wrap the transformer once more
        return tower.encoder.layers


class CLIPVisionAdapter(SiglipVisionAdapter):
    """`CLIPVisionModel`: the same layer structure as SigLIP, with a class token first."""

    family = "clip_vision"
    model_classes = ("CLIPVisionModel",)


class QwenVisionAdapter(VisionTowerAdapter):
    """The Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision transformers (`visual` of the VLMs): a packed sequence of every
    frame's patches with `cu_seqlens`, `blocks` with `norm1`, `attn` (fused `qkv`), `norm2`, `mlp`."""

    family = "qwen_vision"
    model_classes = (
        "Qwen2VisionTransformerPretrainedModel",
        "Qwen2_5_VisionTransformerPretrainedModel",
        "Qwen3VLVisionModel",
    )

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.model.blocks
