"""In-LLM audio pruning for decoder-only LALMs (Qwen2-Audio, the Qwen2.5-Omni thinker): the listener.

At each prefill whose prompt holds audio tokens (`input_ids == audio_token_id`):

1. after the probe layer's attention (layer K-1 by default) the listener computes the text-to-audio attention of
   the text query set (`probe_attention`, post-RoPE queries and keys, normalised over every key);
2. a forward pre-hook on layer K asks the pruner which audio tokens to keep, gathers the hidden states of the kept
   columns (rows of a batch left-padded again, `PrunedPrompt`), and hands layers K, K+1, ... the kept columns'
   rotary embeddings, position ids (original values, M-RoPE included) and attention mask in place of the full
   prompt's (pre-hooks on every layer from K on);
3. after the language model, the cache layers from K on become `RaggedLayer`s holding the kept entries with their
   original columns, so decoding continues at the right positions: layers < K attend over the whole prompt with
   the model's own kernel and mask, layers >= K over the kept tokens only (beam search reorders both).

A pruner that keeps every token changes nothing (bit-identical logits). A plain forward returns outputs for the
kept columns only; `pruner.report.keep` says which they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...cache.ragged import RaggedLayer
from ...core import dispatch
from ...core.session import Listener, LMCall, ModelSession
from ..prompt import PrunedPrompt
from .base import AudioPruningReport, Probe
from .scoring import probe_attention, tail_query_rows

if TYPE_CHECKING:
    from .base import InLLMPruner


@dataclass
class _Prefill:
    candidates: torch.Tensor  # (B, N) bool
    valid: torch.Tensor  # (B, N) bool
    attention: torch.Tensor | None = None  # (B, H, N) at the probe layer
    selected: bool = False
    pruned: PrunedPrompt | None = None
    replacements: dict[str, Any] | None = None  # layer kwargs for the pruned layers


class LayerPruning(Listener):
    """Prunes audio tokens inside a decoder-only language model at layer K (see the module docstring)."""

    def __init__(self, method: InLLMPruner, session: ModelSession) -> None:
        super().__init__()
        adapter = session.adapter
        self.method = method
        self.audio_id = int(adapter.modality_token_ids["audio"])
        layer_types = getattr(adapter.text_config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise ValueError(f"{method.name} needs full-attention decoder layers; this model has {set(layer_types)}")
        self.probe_module: nn.Module | None = None
        if method.uses_attention:
            self.probe_module = adapter.attention_modules[method.probe_layer_index]
        self.base = dispatch.base_name(adapter.attention_modules[0])
        layers = adapter.decoder_layers
        for idx in range(method.layer, len(layers)):
            session.hook_forward_pre(layers[idx], partial(self._before_layer, idx), with_kwargs=True)
        self._state: _Prefill | None = None

    # -- before the language model -------------------------------------------------------------------------------
    def before_lm(self, session: ModelSession, call: LMCall) -> None:
        self._state = None
        if not call.is_prefill:
            return
        if any(m.stage == "kv" for m in session.methods):
            raise ValueError(
                f"{self.method.name} prunes inside the language model and cannot run with a KV press on the same "
                "model; apply one of them"
            )
        ids = (session.inputs or {}).get("input_ids")
        if call.input_ids is not None:
            ids = call.input_ids
        if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != (call.batch_size, call.num_tokens):
            return  # the language model was called without the prompt's ids
        mask = call.attention_mask
        if mask is None:
            recorded = (session.inputs or {}).get("attention_mask")
            mask = recorded if isinstance(recorded, torch.Tensor) and recorded.shape == ids.shape else None
        valid = torch.ones(ids.shape, dtype=torch.bool, device=ids.device) if mask is None else mask.bool()
        candidates = (ids == self.audio_id) & valid.to(ids.device)
        if not bool(candidates.any()):
            counts = [0] * ids.shape[0]
            self.method.report = AudioPruningReport(self.method.name, self.method.layer, counts, counts)
            return
        self._state = _Prefill(candidates, valid.to(ids.device))

    # -- the probe ------------------------------------------------------------------------------------------------
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
        if state is None or module is not self.probe_module or state.attention is not None:
            return
        seq = state.candidates.shape[1]
        if query.shape[2] != seq or key.shape[2] != seq:
            raise RuntimeError(f"probe layer saw {query.shape[2]} queries and {key.shape[2]} keys, expected {seq}")
        rows = tail_query_rows(state.candidates, state.valid, seq, self.method.query_set)  # (B, N)
        first = int(rows.any(dim=0).nonzero()[0])  # the earliest column any row queries from
        scaling = kwargs.get("scaling")
        state.attention = probe_attention(
            query[:, :, first:],
            key,
            scaling=float(module.scaling if scaling is None else scaling),
            query_rows=rows[:, first:],
            key_valid=state.valid,
        )

    # -- layers K, K+1, ... -------------------------------------------------------------------------------------
    def _before_layer(
        self, idx: int, module: nn.Module, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[tuple, dict[str, Any]] | None:
        state = self._state
        if state is None:
            return None
        if not state.selected:
            state.selected = True
            hidden = args[0] if args else kwargs["hidden_states"]
            self._select(state, hidden, kwargs)
            if state.pruned is None:
                return None
            hidden = state.pruned.gather(hidden)
            if args:
                args = (hidden, *args[1:])
            else:
                kwargs = {**kwargs, "hidden_states": hidden}
        if state.replacements is None:
            return None
        return args, {**kwargs, **state.replacements}

    def _select(self, state: _Prefill, hidden: torch.Tensor, kwargs: dict[str, Any]) -> None:
        method = self.method
        if method.uses_attention and state.attention is None:
            raise RuntimeError(f"{method.name}: the probe layer {method.probe_layer_index} did not run")
        probe = Probe(state.candidates, state.valid, state.attention, hidden)
        kept = method.select(probe) & state.candidates
        keep = state.valid & (~state.candidates | kept)  # (B, N)
        method.report = AudioPruningReport(
            method.name,
            method.layer,
            state.candidates.sum(-1).tolist(),
            kept.sum(-1).tolist(),
            keep.detach().cpu(),
            method._routing(),
        )
        state.attention = None
        if bool((keep == state.valid).all()):
            return  # everything kept: the model runs untouched
        pruned = PrunedPrompt.from_keep(keep)
        state.pruned = pruned
        state.replacements = pruned_layer_kwargs(kwargs, pruned, self.base)

    # -- after the language model --------------------------------------------------------------------------------
    def after_lm(self, session: ModelSession, call: LMCall, output: Any) -> None:
        state, self._state = self._state, None
        if state is None or state.pruned is None or call.cache is None:
            return
        pruned = state.pruned
        layers = getattr(call.cache, "layers", None) or []
        for idx in range(self.method.layer, len(layers)):
            layer = layers[idx]
            keys = getattr(layer, "keys", None)
            if not isinstance(keys, torch.Tensor) or keys.dim() != 4 or keys.shape[2] != pruned.width:
                raise RuntimeError(f"cache layer {idx} does not hold the pruned prompt ({pruned.width} columns)")
            ragged = RaggedLayer.from_dense(
                keys,
                layer.values,
                key_mask=pruned.valid.unsqueeze(1).to(keys.device),
                positions=pruned.table.unsqueeze(1).to(keys.device),
                logical_length=pruned.length,
            )
            ragged.session = session
            layers[idx] = ragged


def gather_columns(x: torch.Tensor, pruned: PrunedPrompt) -> torch.Tensor:
    """`x` `(..., batch or 1, length, dim)` (rotary tables of any layout) at the kept columns:
    `(..., batch, width, dim)`."""
    lead = x.shape[:-3]
    full = x.expand(*lead, pruned.batch_size, *x.shape[-2:])
    index = pruned.table.to(x.device)[..., None].expand(*lead, -1, -1, x.shape[-1])
    return full.gather(-2, index)


def pruned_mask(mask: Any, pruned: PrunedPrompt, base: str, dtype: torch.dtype) -> Any:
    """The attention mask of the pruned layers.

    `None` (sdpa's implicit causal mask) stays `None` when no row is padded; a 2-D padding mask (flash attention)
    becomes the pruned prompt's; a 4-D mask `(batch, 1, length, length)` (bool, or additive float for eager) is
    gathered at the kept rows and columns. Padding slots see only themselves (no fully masked row).
    """
    valid = pruned.valid
    device = valid.device if not isinstance(mask, torch.Tensor) else mask.device
    valid = valid.to(device)
    width = pruned.width
    eye = torch.eye(width, dtype=torch.bool, device=device)
    if mask is None:
        if bool(valid.all()):
            return None
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = (causal & valid[:, None, None, :]) | (eye & ~valid[:, None, :, None])  # (B, 1, W, W)
        if base == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        return allowed
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"in-LLM pruning cannot rewrite a {type(mask).__name__} attention mask; use sdpa or eager")
    if mask.dim() == 2:
        return valid.to(mask.dtype)
    if mask.dim() != 4 or mask.shape[-1] != pruned.length or mask.shape[-2] != pruned.length:
        raise ValueError(f"in-LLM pruning expects a (batch, 1, seq, seq) attention mask, got {tuple(mask.shape)}")
    heads = mask.shape[1]
    table = pruned.table.to(device)
    full = mask.expand(pruned.batch_size, heads, pruned.length, pruned.length)
    rows = full.gather(2, table[:, None, :, None].expand(-1, heads, -1, pruned.length))
    out = rows.gather(3, table[:, None, None, :].expand(-1, heads, width, -1))  # (B, h, W, W)
    keep_key = valid[:, None, None, :]
    own = eye & ~valid[:, None, :, None]  # padding slots attend to themselves
    if out.dtype == torch.bool:
        return (out & keep_key) | own
    low = torch.finfo(out.dtype).min
    return out.masked_fill(~keep_key, low).masked_fill(own, 0.0)


def pruned_layer_kwargs(kwargs: dict[str, Any], pruned: PrunedPrompt, base: str) -> dict[str, Any]:
    """The keyword arguments layers K, K+1, ... receive in place of the full prompt's (see the module docstring)."""
    out: dict[str, Any] = {}
    rotary = kwargs.get("position_embeddings")
    if rotary is not None:
        out["position_embeddings"] = tuple(gather_columns(t, pruned) for t in rotary)
    positions = kwargs.get("position_ids")
    if isinstance(positions, torch.Tensor):
        out["position_ids"] = pruned.positions(positions)
    dtype = rotary[0].dtype if rotary is not None else torch.float32
    out["attention_mask"] = pruned_mask(kwargs.get("attention_mask"), pruned, base, dtype)
    for name in ("cache_position",):  # older transformers pass absolute cache columns
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            raise ValueError(f"in-LLM pruning does not support layers that take `{name}` (transformers < 5)")
    return out
