"""The model-family adapter contract.

One adapter per family knows where the decoder layers live, the modality token ids, how to find the modality spans
of an input and how decoding positions continue (M-RoPE included). Methods only talk to models through adapters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ..spans import ModalitySpans


class UnsupportedModelError(ValueError):
    """Raised for a model no adapter handles; the message names the supported families."""


class ModelAdapter(ABC):
    """Wraps one loaded `transformers` model of a supported family.

    Subclasses set `family` (a short name such as `"qwen2_vl"`), `model_classes` (the class names they accept) and
    implement `language_model` and `spans`.
    """

    family: ClassVar[str]
    model_classes: ClassVar[tuple[str, ...]]

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ in cls.model_classes

    # -- where things live -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def language_model(self) -> nn.Module:
        """The decoder stack (the module with `.layers`, `.rotary_emb` and the text `config`)."""

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def attention_modules(self) -> list[nn.Module]:
        """`self_attn` of every decoder layer, in layer order (each has `.layer_idx`)."""
        return [layer.self_attn for layer in self.decoder_layers]

    @property
    def text_config(self) -> Any:
        return self.language_model.config

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def num_attention_heads(self) -> int:
        return self.text_config.num_attention_heads

    @property
    def num_key_value_heads(self) -> int:
        cfg = self.text_config
        return getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads

    @property
    def head_dim(self) -> int:
        cfg = self.text_config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    @property
    def modality_token_ids(self) -> dict[str, int]:
        """Placeholder token id per modality this family supports, e.g. `{"image": 151655, "video": 151656}`."""
        return {}

    # -- inputs ------------------------------------------------------------------------------------------------
    @abstractmethod
    def spans(self, input_ids: torch.Tensor, **model_inputs: Any) -> ModalitySpans:
        """Modality spans of one sequence.

        `input_ids` is `(seq,)` or `(1, seq)`; `model_inputs` are the other keyword arguments the model's forward
        receives (grids, feature masks, ...). Raises `ValueError` when the placeholders and the grids disagree.
        """

    def continuation_position_ids(self, past_length: int, num_new: int, batch_size: int = 1) -> torch.Tensor:
        """Position ids for `num_new` tokens that follow `past_length` logical tokens, in the shape the model's
        forward accepts (`(batch, num_new)` for 1-D RoPE). M-RoPE families override this to add `rope_deltas`."""
        device = next(self.model.parameters()).device
        pos = torch.arange(past_length, past_length + num_new, device=device)
        return pos.unsqueeze(0).expand(batch_size, -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"
