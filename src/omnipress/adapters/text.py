"""Text-only decoders: Llama, Qwen2, Qwen3 (causal LMs and bare models, including a Llama loaded from GGUF)."""

from __future__ import annotations

from torch import nn

from .common import FamilyAdapter


class TextAdapter(FamilyAdapter):
    """A decoder-only LM: no modality spans (only padding), no encoders, 1-D RoPE positions."""

    @property
    def language_model(self) -> nn.Module:
        # `*ForCausalLM` wraps the decoder as `.model`; a bare `*Model` is the decoder itself
        return self.model.model if hasattr(self.model, "lm_head") else self.model


class LlamaAdapter(TextAdapter):
    family = "llama"
    model_classes = ("LlamaForCausalLM", "LlamaModel")


class Qwen2Adapter(TextAdapter):
    family = "qwen2"
    model_classes = ("Qwen2ForCausalLM", "Qwen2Model")


class Qwen3Adapter(TextAdapter):
    family = "qwen3"
    model_classes = ("Qwen3ForCausalLM", "Qwen3Model")
