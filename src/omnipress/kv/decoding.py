"""Decoding-time compression: keep long generations within a memory bound (`decode_budget`, `decode_every`).

As kvpress's DecodingPress, a press with `decode_budget=B, decode_every=N` compresses while generating: after every
`N` new tokens, the cache is cut back to `B` entries per (row, KV head) by the press's own scoring and budget rule
(`B` plays the role of `budget`: SnapKV keeps `B` in every head, PyramidKV, AdaKV and SparseMM share the same total
between layers or heads as they do at prefill). The observation window is the last `window` tokens: their queries
(kept in a small ring buffer per layer, written in place on every step) score everything older, and those `window`
entries are always kept. Every cached entry other than the window is a candidate, prompt and generated tokens alike
(the press's `scope` applies to the prompt at prefill only). Between compressions the cache grows by at most `N`
entries per head, so a generation never holds more than `B + N` entries per head on average (per head for SnapKV-
style uniform budgets).

The periodic compression itself reads lengths on the host and rebuilds the layer (it is an eviction); the steps in
between only write one query into the ring buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..cache.ragged import RaggedLayer
from .base import KVPress, LayerInputs
from .budgets import RaggedIndices

if TYPE_CHECKING:
    from ..core.session import LMCall, ModelSession
    from .plan import PrefillPlan
    from .report import CompressionReport


class DecodingCompressor:
    """Per-generation state of decoding-time compression for one press (see module docstring)."""

    def __init__(self, press: KVPress) -> None:
        config = press.decoding
        if config is None:
            raise ValueError(f"{press.name} has no decode_budget")
        self.press = press
        self.config = config
        self.window = max(1, config.window)
        self._queries: dict[int, torch.Tensor] = {}  # layer -> (batch, q_heads, window, dim) ring buffer
        self._filled: dict[int, int] = {}
        self._since = 0
        self._due = False
        self._mask: torch.Tensor | None = None
        self.report: CompressionReport | None = None

    def start(self, plan: PrefillPlan, report: CompressionReport | None) -> None:
        """A new prompt: forget the previous generation."""
        self._queries.clear()
        self._filled.clear()
        self._since = 0
        self._due = False
        self.report = plan.report

    def observe_prefill(self, layer_idx: int, query: torch.Tensor) -> None:
        """Seed the ring buffer with the prompt's last queries."""
        w = min(self.window, query.shape[2])
        buf = query.new_zeros(query.shape[0], query.shape[1], self.window, query.shape[3])
        buf[:, :, self.window - w :] = query[:, :, -w:]
        self._queries[layer_idx] = buf
        self._filled[layer_idx] = w

    def before_step(self, call: LMCall) -> None:
        self._since += call.num_tokens
        self._due = self._since >= self.config.every
        self._mask = call.attention_mask

    def after_attention(
        self, session: ModelSession, module: nn.Module, query: torch.Tensor, layer: Any, kwargs: dict[str, Any]
    ) -> None:
        route = session.route_of(module)
        if route is None or route[0] != "self" or layer is None:
            return
        idx = route[1]
        self._push(idx, query)
        if self._due and kwargs.get("sliding_window") is None:
            self._compress(session, module, idx, layer, float(kwargs.get("scaling") or module.scaling))

    def after_step(self, session: ModelSession) -> None:
        if self._due:
            self._since = 0
            self._due = False
            if self.report is not None:
                self.report.decode_compressions += 1
                self.press.report = self.report

    # -- internals -------------------------------------------------------------------------------------------------
    def _push(self, idx: int, query: torch.Tensor) -> None:
        """Shift the newest queries into the layer's buffer (a small in-place copy per step)."""
        buf = self._queries.get(idx)
        if buf is None or buf.shape[0] != query.shape[0]:
            buf = query.new_zeros(query.shape[0], query.shape[1], self.window, query.shape[3])
            self._queries[idx] = buf
            self._filled[idx] = 0
        q = min(query.shape[2], self.window)
        if q < self.window:
            buf[:, :, : self.window - q] = buf[:, :, q:].clone()
        buf[:, :, self.window - q :] = query[:, :, -q:]
        self._filled[idx] = min(self.window, self._filled.get(idx, 0) + q)

    def _compress(self, session: ModelSession, module: nn.Module, idx: int, layer: Any, scaling: float) -> None:
        budget = self.config.budget
        if isinstance(layer, RaggedLayer):
            keys, values, valid, _ = layer.padded(right_aligned=True)
        else:
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if keys is None or keys.dim() != 4:
                return
            mask = self._mask
            if isinstance(mask, torch.Tensor) and mask.shape[-1] >= keys.shape[2]:
                valid = mask[:, : keys.shape[2]].bool().unsqueeze(1).expand(-1, keys.shape[1], -1)
            else:
                valid = torch.ones(keys.shape[:3], dtype=torch.bool, device=keys.device)
        window = min(self.window, self._filled.get(idx, 0))
        if window == 0:
            return
        width = keys.shape[2]
        recent = torch.zeros(width, dtype=torch.bool, device=keys.device)
        recent[width - window :] = True
        candidates = valid & ~recent
        inputs = LayerInputs(
            layer_idx=idx,
            num_layers=session.adapter.num_layers,
            query=self._queries[idx][:, :, self.window - window :],
            keys=keys,
            values=values,
            scaling=scaling,
            window=window,
            candidates=candidates,
            protected=valid & recent,
            capacity=budget - window,
            key_mask=valid,
            phase="decode",
        )
        with torch.no_grad():
            keep = self.press.keep_indices(inputs)
        before = int(valid.sum())
        kept = keep.numel() if isinstance(keep, torch.Tensor) else keep.flat.numel()
        if kept == before:
            return  # the budget covers the whole cache: nothing to evict, no rebuild
        if isinstance(layer, RaggedLayer):
            layer.retain(_to_segment_indices(keep, layer.host_lengths, width))
        else:
            columns = torch.arange(width, device=keys.device).view(1, 1, -1).expand(keys.shape[:3])
            compressed = RaggedLayer.from_dense(keys, values, keep, positions=columns, logical_length=width)
            session.replace_layer(module, compressed)
            layer = compressed
        if self.report is not None:
            self.report.decode_entries_evicted += before - sum(layer.host_lengths)


def _to_segment_indices(keep: torch.Tensor | RaggedIndices, lengths: list[int], width: int) -> RaggedIndices:
    """Positions in a right-aligned padded view -> indices inside each segment."""
    device = keep.device if isinstance(keep, torch.Tensor) else keep.flat.device
    lens = torch.tensor(lengths, device=device)
    if isinstance(keep, torch.Tensor):
        counts = torch.full((len(lengths),), keep.shape[-1], device=device)
        flat = keep.reshape(-1)
    else:
        counts = keep.lengths.reshape(-1)
        flat = keep.flat
    offset = torch.repeat_interleave(width - lens, counts)
    return RaggedIndices(flat=flat - offset, lengths=counts.view(-1))
