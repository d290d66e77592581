"""Decoding positions for multimodal-RoPE (M-RoPE) families: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni.

In these models every token has three rotary positions (temporal, height, width). Vision tokens get grid positions,
so after a prompt with media the largest position is smaller than the token count, and text that follows continues
from `position = token_index + rope_delta`. The model computes `rope_deltas` (one per batch row, shape `(batch, 1)`)
during prefill and stores it on its inner model:

- `model.generate` stores it in `_prepare_position_ids_for_generation` (`self.model.rope_deltas = ...`);
- a plain forward without `position_ids` stores it in `compute_3d_position_ids` (`self.rope_deltas = ...`).

`MRopeAdapter` reads that attribute at call time, so its positions always follow the latest prefill. `None`
(nothing prefilled yet, or a text-only forward) means the model itself uses a delta of 0.

`pruned_position_ids` gives a pruned prompt its unpruned M-RoPE positions from the model's own `get_rope_index`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from .common import FamilyAdapter, sequence_ids
from .positions import PrunedPositions, keep_indices


class MRopeAdapter(FamilyAdapter):
    """Adds M-RoPE continuation positions to a `FamilyAdapter`; subclasses set `rope_owner`."""

    @property
    @abstractmethod
    def rope_owner(self) -> nn.Module:
        """The module holding `rope_deltas` (the inner `*Model` of a `*ForConditionalGeneration`)."""

    @abstractmethod
    def rope_index(self, input_ids: torch.Tensor, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """The model's own M-RoPE positions `(3, 1, seq)` of one unpadded prompt `(1, seq)` and its `rope_delta`."""

    def mrope_positions(self, input_ids: torch.Tensor, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """`(3, 1, seq)` temporal/height/width positions of one prompt and its delta: from the `(3 or 4, batch, seq)`
        `position_ids` in `model_inputs` when given (generate's prefill; the first row is used), else from
        `rope_index`."""
        seq = int(input_ids.shape[-1])
        given = model_inputs.get("position_ids")
        if isinstance(given, torch.Tensor) and given.dim() == 3 and given.shape[0] in (3, 4) and given.shape[-1] == seq:
            rows = given[-3:, :1].long()  # (3, 1, seq)
            return rows, int(rows.max()) + 1 - seq
        return self.rope_index(input_ids, model_inputs)

    def pruned_position_ids(self, input_ids: torch.Tensor, keep: torch.Tensor, **model_inputs: Any) -> PrunedPositions:
        """Positions `(4, 1, kept)` of the kept tokens: row 0 their index in the unpruned prompt, rows 1-3 their
        temporal/height/width positions from the model's `get_rope_index` on the unpruned prompt; `rope_delta` is
        the unpruned prompt's delta. See `FamilyAdapter.pruned_position_ids`."""
        ids = sequence_ids(input_ids)
        self.check_unpadded(ids, model_inputs)
        seq = int(ids.shape[0])
        indices = keep_indices(keep, seq).to(ids.device)
        rope, delta = self.mrope_positions(ids.unsqueeze(0), model_inputs)  # (3, 1, seq)
        rope = rope.to(ids.device)[:, :, indices]  # (3, 1, kept)
        return PrunedPositions(torch.cat([indices.view(1, 1, -1), rope], dim=0), delta, seq)  # (4, 1, kept)

    def rope_deltas(self, batch_size: int = 1) -> torch.Tensor:
        """The stored `rope_deltas` as a `(batch_size, 1)` long tensor (zeros before any multimodal prefill).

        Rows are repeated when `batch_size` is a multiple of the stored batch (beam search / sampling expansion),
        the same way the model does it.
        """
        device = next(self.model.parameters()).device
        deltas = getattr(self.rope_owner, "rope_deltas", None)
        if deltas is None:
            return torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        deltas = deltas.to(device=device, dtype=torch.long).reshape(-1, 1)
        if batch_size % deltas.shape[0]:
            raise ValueError(
                f"the model stored rope_deltas for a batch of {deltas.shape[0]}, which does not divide {batch_size}"
            )
        return deltas.repeat_interleave(batch_size // deltas.shape[0], dim=0)

    def continuation_position_ids(self, past_length: int, num_new: int, batch_size: int = 1) -> torch.Tensor:
        """Positions of `num_new` tokens after `past_length` logical tokens, shape `(4, batch_size, num_new)`.

        Row 0 holds the plain text positions `past_length + i` (the model uses them for the attention mask and
        passes them to the attention layers as `position_ids`); rows 1-3 hold the temporal/height/width M-RoPE
        positions `past_length + i + rope_delta`. This is the layout `generate` itself passes in transformers 5.x.
        `past_length` must be the original (uncompressed) prompt length; rows are assumed unpadded.
        """
        if past_length < 0 or num_new < 1 or batch_size < 1:
            raise ValueError(
                f"need past_length >= 0, num_new >= 1, batch_size >= 1; got {past_length}, {num_new}, {batch_size}"
            )
        deltas = self.rope_deltas(batch_size)  # (batch, 1)
        text = torch.arange(past_length, past_length + num_new, device=deltas.device).view(1, 1, -1)
        text = text.expand(1, batch_size, num_new)  # (1, batch, num_new)
        rope = text.expand(3, batch_size, num_new) + deltas.unsqueeze(0)  # (3, batch, num_new)
        return torch.cat([text, rope], dim=0)  # (4, batch, num_new)
