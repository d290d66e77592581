"""A KV press on the entries of one appended chunk (the press's own scoring over the new entries only).

A streaming session prefills its sequence chunk by chunk (the prompt prefix, then each group of frames). With a KV
press among its methods, every committed chunk is compressed on its own, right after each layer's attention over it:
the press scores the chunk's entries with the chunk's last `window` queries as observation window, keeps `budget`
entries per KV head (or removes `compression_ratio` of the in-scope ones) and the rest of the chunk is evicted from
the live cache. Earlier entries are never re-scored. With `scope="video"` (or `"vision"`) the text around the frames
is kept, as in an offline prefill.

This is the per-chunk counterpart of `omnipress.kv.session.PressListener`, which compresses a whole prompt once: the
planning (`make_plan`) and the selection (`KVPress.keep_indices` on `LayerInputs`) are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kv.base import KVPress, LayerInputs
from ..kv.budgets import RaggedIndices
from ..kv.plan import PrefillPlan, kept_by_modality, make_plan
from ..kv.report import CompressionReport, LayerStats
from ..spans import ModalitySpans


@dataclass
class ChunkPlan:
    """What the press compresses in one chunk (see `ChunkCompressor.plan`)."""

    plan: PrefillPlan
    spans: ModalitySpans

    @property
    def report(self) -> CompressionReport:
        return self.plan.report


class ChunkCompressor:
    """Runs one KV press on appended chunks (module docstring).

    Parameters
    ----------
    press : KVPress
        Any omnipress press (SnapKV, AdaKV, MixKV(...), ...). Its `budget` is per chunk and KV head, observation
        window included; `compression_ratio` is the fraction of each chunk's in-scope entries removed.
    num_layers, num_kv_heads : int
        The language model's geometry.
    """

    def __init__(self, press: KVPress, num_layers: int, num_kv_heads: int) -> None:
        self.press = press
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads

    def plan(self, spans: ModalitySpans, device: torch.device) -> ChunkPlan | None:
        """The plan of a chunk whose media sit at `spans` (chunk coordinates), or None when the press keeps all of
        it (nothing in its scope, or a budget that covers every candidate)."""
        scope = self.press.budget_config.scope
        if not bool(spans.mask(scope).any()):
            return None
        valid = torch.ones(1, spans.seq_len, dtype=torch.bool, device=device)
        plan = make_plan(self.press, [spans], valid, self.num_kv_heads, device)
        return ChunkPlan(plan, spans) if plan.compress else None

    def keep(
        self,
        chunk: ChunkPlan,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor | RaggedIndices:
        """Chunk entries each KV head keeps at `layer_idx`, ascending chunk indices: `(1, kv_heads, k)` or
        `RaggedIndices`. `query` `(1, q_heads, n, dim)`, `key`/`value` `(1, kv_heads, n, dim)` are the chunk's
        post-RoPE states."""
        plan = chunk.plan
        n = key.shape[2]
        inputs = LayerInputs(
            layer_idx=layer_idx,
            num_layers=self.num_layers,
            query=query,
            keys=key,
            values=value,
            scaling=scaling,
            window=min(self.press.budget_config.window, n),
            candidates=plan.candidates,
            protected=plan.protected,
            capacity=plan.capacity,
            key_mask=plan.key_mask,
        )
        with torch.no_grad():
            keep = self.press.keep_indices(inputs)
        heads = key.shape[1]
        entry_bytes = key.shape[-1] * key.element_size() + value.shape[-1] * value.element_size()
        kept = keep_counts(keep, heads)
        plan.report.layers.append(
            LayerStats(
                layer=layer_idx,
                tokens_before=n * heads,
                kept_per_head=kept,
                bytes_before=n * heads * entry_bytes,
                bytes_after=sum(kept) * entry_bytes,
                kept_by_modality=kept_by_modality(keep, [chunk.spans], heads, n, key.device),
                kept_bytes=sum(kept) * entry_bytes,
            )
        )
        return keep

    def finish(self, chunk: ChunkPlan) -> CompressionReport:
        """Close the chunk's report and publish it as `press.report` (the last compressed chunk's)."""
        report = chunk.plan.report
        report.compressed = any(s.tokens_after < s.tokens_before for s in report.layers)
        self.press.report = report
        return report


def keep_counts(keep: torch.Tensor | RaggedIndices, heads: int) -> list[int]:
    """Entries kept per KV head of a one-row selection."""
    if isinstance(keep, torch.Tensor):
        return [int(keep.shape[-1])] * heads
    return [int(n) for n in keep.lengths.reshape(-1).tolist()]


def per_head(keep: torch.Tensor | RaggedIndices, heads: int) -> list[torch.Tensor]:
    """A one-row selection as one ascending index tensor per KV head."""
    if isinstance(keep, torch.Tensor):
        return [keep[0, h] for h in range(heads)]
    sizes = keep.lengths.reshape(-1).tolist()
    return list(torch.split(keep.flat, [int(n) for n in sizes]))
