"""A prompt with some columns dropped: the column table, the language-model inputs and the spans of the result.

Rows of a batch keep different numbers of columns, so the pruned prompt is left-padded again: row `b` keeps
`n_b` columns and holds them in its last `n_b` slots. `table[b, j]` is the column of the unpruned prompt that slot
`j` holds (0 on padding slots, which `valid` marks False). Everything the language model receives per column
(`inputs_embeds`, the 2-D attention mask, position ids of any layout, Qwen3-VL's `visual_pos_masks`) is gathered
through the table, so every kept token keeps its original position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..spans import ModalitySpans, Span


@dataclass
class PrunedPrompt:
    """The columns of an unpruned `(batch, length)` prompt that enter the language model.

    Attributes
    ----------
    keep : Tensor
        `(batch, length)` bool over the unpruned prompt (padding False).
    table : Tensor
        `(batch, kept)` long: the unpruned column held by each slot of the pruned prompt (0 on padding slots).
    valid : Tensor
        `(batch, kept)` bool: the real slots (left padding is False).
    """

    keep: torch.Tensor
    table: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def from_keep(cls, keep: torch.Tensor) -> PrunedPrompt:
        """Left-pad the kept columns of every row to the longest row."""
        if keep.dim() != 2 or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a (batch, length) bool tensor, got {keep.dtype} {tuple(keep.shape)}")
        counts = keep.sum(dim=-1)  # (batch,)
        width = int(counts.max()) if counts.numel() else 0
        pad = width - counts  # (batch,)
        rows, cols = keep.nonzero(as_tuple=True)
        slot = (keep.long().cumsum(dim=-1) - 1 + pad.unsqueeze(-1))[rows, cols]
        table = torch.zeros(keep.shape[0], width, dtype=torch.long, device=keep.device)
        table[rows, slot] = cols
        valid = torch.arange(width, device=keep.device).unsqueeze(0) >= pad.unsqueeze(-1)
        return cls(keep, table, valid)

    @property
    def batch_size(self) -> int:
        return int(self.keep.shape[0])

    @property
    def length(self) -> int:
        """Columns of the unpruned prompt."""
        return int(self.keep.shape[1])

    @property
    def width(self) -> int:
        """Columns of the pruned prompt (the longest row plus the others' padding)."""
        return int(self.table.shape[1])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `(batch, length, ...)` at the kept columns, `(batch, width, ...)`; padding slots zeroed."""
        index = self.table.to(x.device).view(*self.table.shape, *([1] * (x.dim() - 2)))
        out = x.gather(1, index.expand(-1, -1, *x.shape[2:]))
        valid = self.valid.to(x.device).view(*self.valid.shape, *([1] * (x.dim() - 2)))
        return out.masked_fill(~valid, 0)

    def positions(self, position_ids: torch.Tensor | None) -> torch.Tensor:
        """The kept columns' position ids in the layout given: `(batch or 1, length)` or `(rows, batch or 1,
        length)` (M-RoPE: 3 rows, or 4 with the text index first). `None` (the language model would number the
        prompt `0 .. length-1` itself) gives `(batch, width)` positions of those numbers."""
        batch, length = self.batch_size, self.length
        device = self.table.device
        if position_ids is None:
            position_ids = torch.arange(length, device=device).expand(batch, length)
        if position_ids.shape[-1] != length:
            raise ValueError(f"position_ids cover {position_ids.shape[-1]} columns, the prompt has {length}")
        lead = tuple(position_ids.shape[:-2])
        full = position_ids.expand(*lead, batch, length)
        index = self.table.to(full.device).expand(*lead, batch, self.width)
        return full.gather(-1, index)

    def spans(self, spans: list[ModalitySpans]) -> list[ModalitySpans]:
        """The rows' spans in the pruned prompt (a span whose tokens were all dropped disappears)."""
        out = []
        for row, row_spans in enumerate(spans):
            slot = torch.full((self.length,), -1, dtype=torch.long)
            valid = self.valid[row].cpu()
            slot[self.table[row].cpu()[valid]] = torch.arange(self.width)[valid]
            moved = []
            for span in row_spans.spans:
                kept = slot[span.start : span.end]
                kept = kept[kept >= 0]
                if kept.numel():
                    start, end = int(kept.min()), int(kept.max()) + 1
                    moved.append(Span(span.modality, start, end, span.item, span.frame))
            out.append(ModalitySpans(self.width, moved, padding=self.width - int(valid.sum())))
        return out


def prune_lm_kwargs(kwargs: dict[str, Any], pruned: PrunedPrompt, embeds: torch.Tensor) -> dict[str, Any]:
    """The language model's keyword arguments for the pruned prompt.

    `embeds` `(batch, length, hidden)` are the unpruned prompt's embeddings (with any replaced rows, e.g. merged
    contextual tokens). The attention mask becomes the pruned prompt's 2-D padding mask; position ids keep every
    kept token's original position; Qwen3-VL's `visual_pos_masks` and `deepstack_visual_embeds` follow the kept
    visual tokens.
    """
    mask = kwargs.get("attention_mask")
    if isinstance(mask, dict) or (isinstance(mask, torch.Tensor) and mask.dim() != 2):
        raise ValueError(
            "token pruning needs the 2-D padding mask of the prompt, but the language model received a precomputed "
            f"{'dict of masks' if isinstance(mask, dict) else f'{mask.dim()}-D mask'} (a static or compiled cache); "
            "use the default dynamic cache"
        )
    new = dict(kwargs)
    new["inputs_embeds"] = pruned.gather(embeds)
    dtype = mask.dtype if isinstance(mask, torch.Tensor) else torch.long
    new["attention_mask"] = pruned.valid.to(device=embeds.device, dtype=dtype)
    new["position_ids"] = pruned.positions(kwargs.get("position_ids"))
    visual = kwargs.get("visual_pos_masks")
    if isinstance(visual, torch.Tensor):
        visual = visual.to(pruned.keep.device)
        new["visual_pos_masks"] = pruned.gather(visual)
        deepstack = kwargs.get("deepstack_visual_embeds")
        if deepstack is not None:
            kept_visual = pruned.keep[visual]  # (visual tokens,) in row-major order, as the deepstack rows are
            new["deepstack_visual_embeds"] = [d[kept_visual.to(d.device)] for d in deepstack]
    return new
