"""In-LLM audio pruning for Whisper: the encoder states the decoder cross-attends to are the audio tokens.

At the first decoder call on a fresh cache (the prompt `<|startoftranscript|> ...`, or `generate`'s prefill), the
listener probes the cross-attention of decoder layer K-1 (the decoder prompt's queries over the 1500 encoder
states, normalised over all of them), asks the pruner which encoder positions holding audio to keep (the positions
past the audio, Whisper's 30 s padding, are never candidates: `whisper_padding` keeps or drops them; without the
feature extractor's `attention_mask` among the inputs every position counts as audio), and, before
the cross-attention of every layer from K on, replaces that layer's cross-attention cache by a `RaggedLayer` of
the kept positions. The prefill and every decoding step of those layers then attend over the kept states only
(layers < K over all of them); beam search reorders the ragged layers like any cache layer. A KV press on the same
model then compresses each pruned layer among the kept states (`omnipress.kv.cross`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...cache.ragged import RaggedLayer
from ...core.session import Listener, LMCall, ModelSession
from .base import AudioPruningReport, Probe
from .scoring import probe_attention

if TYPE_CHECKING:
    from .base import InLLMPruner


@dataclass
class _Call:
    audio_positions: list[int] | None  # per input row, from the feature extractor's mask (None: all positions)
    attention: torch.Tensor | None = None  # (B, H, S)
    keep: torch.Tensor | None = None  # (B, S) bool, once selected
    untouched: bool = False  # selected, and every position kept


class CrossAttentionPruning(Listener):
    """Prunes Whisper's encoder states before the cross-attention of decoder layers K, K+1, ... (module docstring)."""

    def __init__(self, method: InLLMPruner, session: ModelSession) -> None:
        super().__init__()
        adapter = session.adapter
        self.method = method
        self.adapter = adapter
        modules = list(adapter.cross_attention_modules)
        self.index = {module: idx for idx, module in enumerate(modules)}
        self.probe_module: nn.Module | None = modules[method.probe_layer_index] if method.uses_attention else None
        self._state: _Call | None = None

    def before_lm(self, session: ModelSession, call: LMCall) -> None:
        self._state = None
        if call.past_length != 0:
            return
        mask = (session.inputs or {}).get("attention_mask")
        positions = None
        if (
            isinstance(mask, torch.Tensor)
            and mask.dim() == 2
            and mask.shape[-1] == 2 * self.adapter.num_encoder_positions
        ):
            positions = self.adapter.audio_encoder_positions(feature_attention_mask=mask)
        self._state = _Call(positions)

    def _candidates(self, state: _Call, batch: int, seq: int, device: torch.device) -> torch.Tensor:
        """`(batch, seq)` bool: the encoder positions holding audio (rows repeated for beams)."""
        counts = state.audio_positions or [seq]
        if batch % len(counts):
            raise RuntimeError(f"{len(counts)} audio clips do not match {batch} decoder rows")
        n = torch.tensor(counts, device=device).repeat_interleave(batch // len(counts))  # (B,)
        return torch.arange(seq, device=device).unsqueeze(0) < n.unsqueeze(1)

    def after_attention(
        self,
        session: ModelSession,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kwargs: dict[str, Any],
        layer: Any,
    ) -> None:
        state = self._state
        if state is None or module is not self.probe_module or state.attention is not None or layer is None:
            return
        if isinstance(layer, RaggedLayer):
            return
        bsz, seq = key.shape[0], key.shape[2]
        scaling = kwargs.get("scaling")
        state.attention = probe_attention(
            query,
            key,
            scaling=float(1.0 if scaling is None else scaling),
            query_rows=self._query_rows(bsz, query.shape[2], query.device),
            key_valid=torch.ones(bsz, seq, dtype=torch.bool, device=key.device),
            causal=False,
        )

    def _query_rows(self, batch: int, q_len: int, device: torch.device) -> torch.Tensor:
        rows = torch.ones(batch, q_len, dtype=torch.bool, device=device)
        if self.method.query_set == "last":
            rows[:, :-1] = False
        return rows

    def before_attention(self, session: ModelSession, module: nn.Module, query: torch.Tensor, layer: Any) -> Any:
        state = self._state
        idx = self.index.get(module)
        if state is None or idx is None or idx < self.method.layer or layer is None or state.untouched:
            return None
        if isinstance(layer, RaggedLayer):
            return None  # already pruned (a later step)
        keys, values = layer.keys, layer.values  # (B, H, S, d)
        if state.keep is None:
            self._select(state, keys)
            if state.untouched:
                return None
        keep = state.keep.to(keys.device)
        return RaggedLayer.from_dense(keys, values, key_mask=keep.unsqueeze(1))

    def _select(self, state: _Call, keys: torch.Tensor) -> None:
        method = self.method
        bsz, heads, seq, dim = keys.shape
        candidates = self._candidates(state, bsz, seq, keys.device)
        valid = torch.ones_like(candidates)
        if method.uses_attention and state.attention is None:
            raise RuntimeError(f"{method.name}: the probe layer {method.probe_layer_index} did not run")
        features = keys.transpose(1, 2).reshape(bsz, seq, heads * dim)  # (B, S, H*d)
        kept = method.select(Probe(candidates, valid, state.attention, features)) & candidates
        keep = kept | (~candidates if method.whisper_padding == "keep" else torch.zeros_like(candidates))
        method.report = AudioPruningReport(
            method.name,
            method.layer,
            candidates.sum(-1).tolist(),
            kept.sum(-1).tolist(),
            keep.detach().cpu(),
            method._routing(),
        )
        state.attention = None
        state.keep = keep
        state.untouched = bool(keep.all())

    def after_lm(self, session: ModelSession, call: LMCall, output: Any) -> None:
        self._state = None
