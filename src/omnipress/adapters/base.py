"""The model-family adapter contract.

One adapter per family knows where the decoder layers and the encoders live, the modality token ids, how to find the
modality spans of an input (one `ModalitySpans` per batch row) and how positions continue (M-RoPE included). Methods
only talk to models through adapters.
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
    implement `language_model` and `batch_spans`.
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
        """The decoder stack (the module with `.layers` and the text `config`)."""

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def attention_modules(self) -> list[nn.Module]:
        """`self_attn` of every decoder layer, in layer order (each has `.layer_idx`)."""
        return [layer.self_attn for layer in self.decoder_layers]

    #: False for a bare encoder (a vision tower on its own): no language model, only encoder methods apply
    has_language_model: ClassVar[bool] = True

    @property
    def cross_attention_modules(self) -> list[nn.Module]:
        """The decoder's cross-attention (over encoder states) per layer, in layer order; `[]` for decoder-only
        families."""
        return []

    @property
    def is_encoder_decoder(self) -> bool:
        """Whether the text decoder attends to a separate encoder's states through cross-attention (Whisper)."""
        return False

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
    def batch_spans(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **model_inputs: Any
    ) -> list[ModalitySpans]:
        """Modality spans of every row of a (left-padded) batch.

        Parameters
        ----------
        input_ids:
            `(batch, seq)` token ids (a `(seq,)` tensor is one row).
        attention_mask:
            `(batch, seq)` with zeros only as a left prefix of a row (left padding); `None` means no padding.
        model_inputs:
            The other keyword arguments of the model's forward for the whole batch (grids, pixel tensors, feature
            masks, `mm_encoder_outputs`, M-RoPE `position_ids`, ...), whose media items are in row order.

        Returns
        -------
        list[ModalitySpans]
            One per row, spans in column coordinates of the padded row, `padding` = the row's left-padding columns.

        Raises
        ------
        ValueError
            When the placeholders and the media disagree, or the padding is not on the left.
        """

    def spans(self, input_ids: torch.Tensor, **model_inputs: Any) -> ModalitySpans:
        """Modality spans of one sequence.

        `input_ids` is `(seq,)` or `(1, seq)`; `model_inputs` are the other keyword arguments the model's forward
        receives for this one sequence (grids, feature masks, an `attention_mask` with left padding, ...). For a batch
        use `batch_spans`. Raises `ValueError` when the placeholders and the grids disagree.
        """
        from .common import sequence_ids

        ids = sequence_ids(input_ids)
        mask = model_inputs.pop("attention_mask", None)
        if mask is not None:
            mask = torch.as_tensor(mask)
            if mask.dim() == 1:
                mask = mask.unsqueeze(0)
            if tuple(mask.shape) != (1, ids.shape[0]):
                raise ValueError(
                    f"spans are computed for one sequence of length {ids.shape[0]}, but attention_mask has shape "
                    f"{tuple(mask.shape)}; for a batch use batch_spans(input_ids, attention_mask, **inputs)"
                )
        return self.batch_spans(ids.unsqueeze(0), mask, **model_inputs)[0]

    def continuation_position_ids(self, past_length: int, num_new: int, batch_size: int = 1) -> torch.Tensor:
        """Position ids for `num_new` tokens that follow `past_length` logical tokens, in the shape the model's
        forward accepts (`(batch, num_new)` for 1-D RoPE). M-RoPE families override this to add `rope_deltas`."""
        device = next(self.model.parameters()).device
        pos = torch.arange(past_length, past_length + num_new, device=device)
        return pos.unsqueeze(0).expand(batch_size, -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"
