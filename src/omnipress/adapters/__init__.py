"""Model-family adapters: where a model's decoder layers, modality tokens and positions live.

`get_adapter(model)` picks the adapter for a loaded `transformers` model by its class. Supported families:

| family | model classes |
|---|---|
| llama, qwen2, qwen3 | `LlamaForCausalLM` (also from GGUF), `Qwen2ForCausalLM`, `Qwen3ForCausalLM`, bare `*Model` |
| qwen2_vl, qwen2_5_vl, qwen3_vl | `*ForConditionalGeneration`, `*Model` |
| llava, llava_onevision | `LlavaForConditionalGeneration`, `LlavaOnevisionForConditionalGeneration`, bare `*Model` |
| qwen2_audio | `Qwen2AudioForConditionalGeneration`, `Qwen2AudioModel` |
| qwen2_5_omni | `Qwen2_5OmniThinkerForConditionalGeneration`, `Qwen2_5OmniThinkerModel`, and the full
  `Qwen2_5OmniForConditionalGeneration` (through its thinker) |
| whisper (encoder-decoder) | `WhisperForConditionalGeneration`, `WhisperModel` |
| siglip_vision, clip_vision, qwen_vision (bare vision towers, no LLM: encoder methods only) | `SiglipVisionModel`,
  `CLIPVisionModel`, `Qwen2VisionTransformerPretrainedModel`, `Qwen2_5_VisionTransformerPretrainedModel`,
  `Qwen3VLVisionModel` |

Every adapter gives per-row `batch_spans` of a left-padded batch, the encoders and their blocks, the modules whose
outputs enter the LLM and a hook on those features, and the positions of a pruned token set. `collate_inputs` turns
single-prompt inputs into one left-padded batch as the processors do.
"""

from __future__ import annotations

from torch import nn

from .base import ModelAdapter, UnsupportedModelError
from .batching import collate_inputs
from .common import FamilyAdapter, MediaItems
from .features import FeatureFn, HookHandle
from .llava import LlavaAdapter, LlavaOnevisionAdapter
from .mrope import MRopeAdapter
from .positions import PrunedPositions
from .qwen_audio import Qwen2_5OmniAdapter, Qwen2AudioAdapter
from .qwen_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter
from .text import LlamaAdapter, Qwen2Adapter, Qwen3Adapter
from .vision_towers import CLIPVisionAdapter, QwenVisionAdapter, SiglipVisionAdapter, VisionTowerAdapter
from .whisper import WhisperAdapter

ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    LlamaAdapter,
    Qwen2Adapter,
    Qwen3Adapter,
    Qwen2VLAdapter,
    Qwen2_5_VLAdapter,
    Qwen3VLAdapter,
    LlavaAdapter,
    LlavaOnevisionAdapter,
    Qwen2AudioAdapter,
    Qwen2_5OmniAdapter,
    WhisperAdapter,
    SiglipVisionAdapter,
    CLIPVisionAdapter,
    QwenVisionAdapter,
)


def supported_models() -> dict[str, tuple[str, ...]]:
    """Model class names accepted per family, e.g. `{"qwen2_vl": ("Qwen2VLForConditionalGeneration", ...)}`."""
    return {adapter.family: adapter.model_classes for adapter in ADAPTERS}


def get_adapter(model: nn.Module) -> FamilyAdapter:
    """The adapter of `model`'s family.

    Raises
    ------
    UnsupportedModelError
        For any other model class; the message lists every supported family and class.
    """
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter(model)
    listing = "; ".join(f"{family}: {', '.join(classes)}" for family, classes in supported_models().items())
    raise UnsupportedModelError(
        f"omnipress has no adapter for {type(model).__name__}. Supported families and model classes: {listing}"
    )


__all__ = [
    "ADAPTERS",
    "CLIPVisionAdapter",
    "FamilyAdapter",
    "FeatureFn",
    "HookHandle",
    "LlamaAdapter",
    "LlavaAdapter",
    "LlavaOnevisionAdapter",
    "MRopeAdapter",
    "MediaItems",
    "ModelAdapter",
    "PrunedPositions",
    "Qwen2Adapter",
    "Qwen2AudioAdapter",
    "Qwen2VLAdapter",
    "Qwen2_5OmniAdapter",
    "Qwen2_5_VLAdapter",
    "Qwen3Adapter",
    "Qwen3VLAdapter",
    "QwenVisionAdapter",
    "SiglipVisionAdapter",
    "UnsupportedModelError",
    "VisionTowerAdapter",
    "WhisperAdapter",
    "collate_inputs",
    "get_adapter",
    "supported_models",
]
