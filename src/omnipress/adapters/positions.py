"""Position ids of a pruned token set: the positions the kept tokens had in the unpruned prompt.

A method that drops prompt tokens before (or inside) the language model must run the kept tokens at their original
positions, so that RoPE sees the same relative offsets as in the full prompt, and the text that follows must continue
from the unpruned prompt length (plus the M-RoPE `rope_delta`), never from the number of kept tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrunedPositions:
    """What `adapter.pruned_position_ids` returns.

    Attributes
    ----------
    position_ids:
        The kept tokens' positions in the layout the model's forward takes: `(1, kept)` for 1-D RoPE families;
        `(4, 1, kept)` for M-RoPE families (row 0 the plain token index in the unpruned prompt, rows 1-3 the
        temporal/height/width positions), the layout `generate` passes in transformers 5.x.
    rope_delta:
        The unpruned prompt's M-RoPE delta (0 for 1-D RoPE): a token at unpruned index `i >= prompt length` has
        position `i + rope_delta`. `adapter.continuation_position_ids(prompt_length, n)` gives these positions once
        the model stored the delta.
    prompt_length:
        Number of tokens of the unpruned prompt (the `past_length` new tokens continue from).
    """

    position_ids: torch.Tensor
    rope_delta: int
    prompt_length: int

    def continuation(self, num_new: int) -> torch.Tensor:
        """Positions of `num_new` tokens after the prompt, in the layout of `position_ids`."""
        text = torch.arange(self.prompt_length, self.prompt_length + num_new, device=self.position_ids.device)
        if self.position_ids.dim() == 2:
            return text.unsqueeze(0)  # (1, num_new)
        text = text.view(1, 1, num_new)
        return torch.cat([text, text.expand(3, 1, num_new) + self.rope_delta], dim=0)  # (4, 1, num_new)


def keep_indices(keep: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Sorted long indices of the kept tokens from a `(seq_len,)` bool mask or from sorted unique indices.

    Raises
    ------
    ValueError
        For a mask of the wrong length, indices out of range, unsorted or repeated, or nothing kept.
    """
    keep = torch.as_tensor(keep)
    if keep.dim() != 1:
        raise ValueError(f"keep must be 1-D (a bool mask or indices over the prompt), got shape {tuple(keep.shape)}")
    if keep.dtype == torch.bool:
        if keep.shape[0] != seq_len:
            raise ValueError(f"the keep mask has {keep.shape[0]} entries but the prompt has {seq_len} tokens")
        indices = keep.nonzero().flatten()
    else:
        indices = keep.long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= seq_len):
            low, high = int(indices.min()), int(indices.max())
            raise ValueError(f"keep indices must lie in [0, {seq_len}), got [{low}, {high}]")
        if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
            raise ValueError("keep indices must be sorted and unique")
    if indices.numel() == 0:
        raise ValueError("keep selects no token")
    return indices
