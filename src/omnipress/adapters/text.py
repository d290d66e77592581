"""Text-only decoders: Llama, Qwen2, Qwen3 (causal LMs and bare models, including a Llama loaded from GGUF)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..spans import ModalitySpans
from .common import FamilyAdapter, sequence_ids


class TextAdapter(FamilyAdapter):
    """A decoder-only LM: no modality spans, 1-D RoPE positions (the base `continuation_position_ids`)."""

    @property
    def language_model(self) -> nn.Module:
        # `*ForCausalLM` wraps the decoder as `.model`; a bare `*Model` is the decoder itself
        return self.model.model if hasattr(self.model, "lm_head") else self.model

    def spans(self, input_ids: torch.Tensor, **model_inputs: Any) -> ModalitySpans:
        return ModalitySpans(int(sequence_ids(input_ids).shape[0]), [])


class LlamaAdapter(TextAdapter):
    family = "llama"
    model_classes = ("LlamaForCausalLM", "LlamaModel")


class Qwen2Adapter(TextAdapter):
    family = "qwen2"
    model_classes = ("Qwen2ForCausalLM", "Qwen2Model")


class Qwen3Adapter(TextAdapter):
    family = "qwen3"
    model_classes = ("Qwen3ForCausalLM", "Qwen3Model")
