"""STC-Cacher's selective encoder layer: replacements of a block's attention and MLP branches.

STC (arXiv 2512.00891, https://arxiv.org/abs/2512.00891), spec §1.2.1. A ViT block computes
`x1 = x + Attn(LN1(x))`, `y = x1 + MLP(LN2(x1))`. The cacher replaces the block's two branch modules by
`CachedAttention` and `CachedMLP`, which hold the originals and compute with their weights; the block's own forward
(norms, residuals, transformers' output capture of `hidden_states`) runs unchanged around them.

Per frame of the encoder call (frames are processed in stream order, see `CallPlan`):

- **refresh frame**: the dense branches; the frame's keys, values, attention output and MLP output become the layer's
  reference;
- **selective frame**: keys `K = LN1(x) Wk` for all tokens; the `update_ratio` share of tokens whose keys are least
  similar to the reference keys at the same position are dynamic (`I`). Only they get queries and values
  (`Q_I`, `V_I`); static tokens use the reference values (`V_mix`). The dynamic queries attend over all fresh keys:
  `A_I = out(softmax(Q_I K^T) V_mix)`; static tokens take the reference attention output. The MLP runs on the dynamic
  rows of `LN2(x1)` only; static tokens take the reference MLP output. Every token keeps its own residual.

Gathers and scatters only: the selective path projects, attends and runs the MLP on the dynamic rows alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .segment_attention import segment_attention
from .stc_select import key_similarity, select_dynamic
from .stc_state import CallPlan, Frame, LayerReference, StreamState
from .vit_attention import ViTAttention


@dataclass(frozen=True)
class Selection:
    """How a layer picks dynamic tokens (the cacher's knobs)."""

    update_ratio: float
    mode: str
    threshold: float
    metric: str


@dataclass
class _Batch:
    """Selective frames of one group processed together: where their rows are and their dynamic tokens."""

    positions: list[int]  # call positions of the frames
    rows: _FrameRows
    dynamic: torch.Tensor  # (frames, count) ascending token indices


@dataclass
class _GroupWork:
    refresh: list[int]
    refresh_rows: _FrameRows | None
    batches: list[_Batch] = field(default_factory=list)


class LayerCache:
    """What the attention and MLP replacements of one layer share: the stream, the layer index, and the attention's
    choice of dynamic tokens for the MLP that follows it."""

    def __init__(self, state: Callable[[], StreamState], layer: int, selection: Selection) -> None:
        self._state, self.layer, self.selection = state, layer, selection
        self.pending: list[_GroupWork] | None = None

    @property
    def state(self) -> StreamState:
        return self._state()

    def reference(self) -> LayerReference:
        refs = self.state.references
        while len(refs) <= self.layer:
            refs.append(None)
        if refs[self.layer] is None:
            refs[self.layer] = LayerReference()
        return refs[self.layer]


class _FrameRows:
    """The token rows of some frames of one size in the call's `(rows, dim)` tensors: a slice when they are
    consecutive (no copy), else an index."""

    def __init__(self, frames: list[Frame], device: torch.device) -> None:
        self.count, self.tokens, self.device = len(frames), frames[0].tokens, device
        first = frames[0].start
        consecutive = all(f.start == first + j * self.tokens for j, f in enumerate(frames))
        self.span = (first, first + self.count * self.tokens) if consecutive else None
        self._starts = [f.start for f in frames]
        self._index: torch.Tensor | None = None

    @property
    def index(self) -> torch.Tensor:
        """`(frames, tokens)` row of every token."""
        if self._index is None:
            starts = torch.tensor(self._starts, device=self.device)
            self._index = starts[:, None] + torch.arange(self.tokens, device=self.device)
        return self._index

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """`(rows, ...)` -> `(frames, tokens, ...)`, a view when consecutive."""
        if self.span is not None:
            return rows[self.span[0] : self.span[1]].unflatten(0, (self.count, self.tokens))
        return rows[self.index]

    def select(self, members: list[int]) -> _FrameRows:
        """The rows of the frames `members` (positions in this set)."""
        sub = _FrameRows.__new__(_FrameRows)
        sub.count, sub.tokens, sub.device = len(members), self.tokens, self.device
        sub._starts = [self._starts[n] for n in members]
        first = sub._starts[0]
        consecutive = all(s == first + j * self.tokens for j, s in enumerate(sub._starts))
        sub.span = (first, first + sub.count * self.tokens) if consecutive else None
        sub._index = None
        return sub


class _Output:
    """The `(rows, dim)` output of a branch, written frame set by frame set. A single write that covers every row
    becomes the output itself (no copy)."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like, self.buffer = like, None

    def _buf(self) -> torch.Tensor:
        if self.buffer is None:
            self.buffer = torch.empty_like(self.like)
        return self.buffer

    def put(self, where: _FrameRows, values: torch.Tensor) -> None:
        """Write `values` `(frames, tokens, dim)` at the rows of `where`."""
        if self.buffer is None and where.span == (0, self.like.shape[0]):
            self.buffer = values.reshape(self.like.shape)
        elif where.span is not None:
            self._buf()[where.span[0] : where.span[1]] = values.flatten(0, 1)
        else:
            self._buf().index_copy_(0, where.index.flatten(), values.flatten(0, 1))

    def put_mixed(
        self, where: _FrameRows, base: list[torch.Tensor], dynamic: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Write, for frame `n` of `where`, `base[n]` `(tokens, dim)` with `values[n]` at tokens `dynamic[n]`."""
        dim = self.like.shape[-1]
        if where.span is not None:
            region = self._buf()[where.span[0] : where.span[1]].unflatten(0, (where.count, where.tokens))
        else:
            region = self.like.new_empty(where.count, where.tokens, dim)
        for n, b in enumerate(base):
            region[n].copy_(b)
        if dynamic.shape[1]:
            region.scatter_(1, dynamic[..., None].expand(-1, -1, dim), values)
        if where.span is None:
            self._buf().index_copy_(0, where.index.flatten(), region.flatten(0, 1))

    def result(self) -> torch.Tensor:
        return self._buf()


def _keep(t: torch.Tensor) -> torch.Tensor:
    """`t` to be stored across calls: a copy when it is a view into a larger tensor (not to keep that alive)."""
    whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
    return t if whole else t.clone()


def _stack(per_frame: list[torch.Tensor]) -> torch.Tensor:
    return per_frame[0].unsqueeze(0) if len(per_frame) == 1 else torch.stack(per_frame)


class CachedAttention(nn.Module):
    """The attention branch of one encoder block under STC-Cacher (see module docstring).

    Holds the original attention module (`original`) and returns what it returns: `(output, None)` for SigLIP/CLIP,
    the output tensor for the Qwen towers. Outside an encoder call planned by the cacher it is the original.
    """

    def __init__(self, original: nn.Module, cache: LayerCache) -> None:
        super().__init__()
        self.original = original
        self.ops = ViTAttention(original)
        self.cache = cache

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> Any:
        call = self.cache.state.call
        if call is None:  # not inside a planned encoder call
            self.cache.pending = None
            if self.ops.fused:
                return self.original(
                    hidden_states, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings, **kwargs
                )
            return self.original(hidden_states=hidden_states, attention_mask=attention_mask, **kwargs)
        if attention_mask is not None:
            raise ValueError("STC-Cacher does not support an attention mask inside the vision encoder")
        out = self._forward(call, hidden_states, cu_seqlens, position_embeddings)
        return out if self.ops.fused else (out, None)

    def _forward(
        self,
        call: CallPlan,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        ops, cache, selection = self.ops, self.cache, self.cache.selection
        dim = hidden_states.shape[-1]
        rows = hidden_states.reshape(-1, dim)  # (all tokens of the call, dim)
        call.bind(rows.shape[0], None if hidden_states.dim() == 2 else hidden_states.shape[1])
        keys = ops.keys(rows, rotary)  # (rows, dim): every token needs its fresh key
        out = _Output(rows)
        stored = cache.reference()
        made: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # call position -> (key, value, attn)
        works: list[_GroupWork] = []
        counts = call.recomputed

        def rot(where: _FrameRows | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
            if rotary is None:
                return None
            if isinstance(where, _FrameRows):
                return where.take(rotary[0]), where.take(rotary[1])
            return rotary[0][where], rotary[1][where]

        for group in call.groups:
            bounds = call.segment_bounds(call.frames[group[0]], cu_seqlens)
            refresh = [j for j in group if call.frames[j].refresh]
            selective = [j for j in group if not call.frames[j].refresh]
            work = _GroupWork(refresh, None)
            if refresh:  # dense: every token of the reference frames
                where = _FrameRows([call.frames[j] for j in refresh], rows.device)
                h = where.take(rows)  # (frames, tokens, dim)
                q, k, v = ops.queries(h, rot(where)), where.take(keys), ops.values(h)
                a = segment_attention(ops.heads(q), ops.heads(k), ops.heads(v), None, bounds, ops.scale)
                attn = ops.output(a.flatten(-2))  # (frames, tokens, dim)
                out.put(where, attn)
                work.refresh_rows = where
                for n, j in enumerate(refresh):
                    made[j] = (k[n], v[n], attn[n])
                    counts[j].append(where.tokens)
            if selective:
                where = _FrameRows([call.frames[j] for j in selective], rows.device)
                sources = [call.frames[j].source for j in selective]

                def ref(n: int, field: int, sources: list[int | None] = sources) -> torch.Tensor:
                    source = sources[n]
                    if source is not None:
                        return made[source][field]
                    return (stored.key, stored.value, stored.attn)[field]

                k_all = where.take(keys)  # (frames, tokens, dim)
                ref_k = _stack([ref(n, 0) for n in range(len(selective))])
                similarity = key_similarity(k_all, ref_k, selection.metric)  # (frames, tokens)
                chosen = select_dynamic(similarity, selection.update_ratio, selection.mode, selection.threshold)
                if selection.mode == "ratio":
                    parts = [(list(range(len(selective))), torch.stack(chosen))]
                else:  # counts differ per frame: one frame at a time
                    parts = [([n], chosen[n][None]) for n in range(len(selective))]
                for members, dynamic in parts:
                    sub = where.select(members) if len(members) < len(selective) else where
                    attn_i = None
                    if dynamic.shape[1]:
                        picked = sub.index.gather(1, dynamic)  # (frames, count) rows of the dynamic tokens
                        h = rows[picked]  # (frames, count, dim)
                        q, v = ops.queries(h, rot(picked)), ops.values(h)
                        v_mix = torch.stack([ref(n, 1) for n in members])  # (frames, tokens, dim)
                        v_mix.scatter_(1, dynamic[..., None].expand(-1, -1, dim), v)
                        k = k_all[members] if len(members) < len(selective) else k_all
                        a = segment_attention(ops.heads(q), ops.heads(k), ops.heads(v_mix), dynamic, bounds, ops.scale)
                        attn_i = ops.output(a.flatten(-2))  # (frames, count, dim)
                    out.put_mixed(sub, [ref(n, 2) for n in members], dynamic, attn_i)
                    work.batches.append(_Batch([selective[n] for n in members], sub, dynamic))
                    for n in members:
                        counts[selective[n]].append(int(dynamic.shape[1]))
            works.append(work)

        last = max(made, default=None)
        if last is not None:  # the newest reference frame of the call becomes the stored one
            stored.key, stored.value, stored.attn = (_keep(t) for t in made[last])
        cache.pending = works
        return out.result().view_as(hidden_states)


class CachedMLP(nn.Module):
    """The MLP branch of one encoder block under STC-Cacher: the original MLP on the dynamic rows (all rows of
    refresh frames), the reference MLP output on static rows. Outside a planned call it is the original."""

    def __init__(self, original: nn.Module, cache: LayerCache) -> None:
        super().__init__()
        self.original = original
        self.cache = cache

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        works, self.cache.pending = self.cache.pending, None
        call = self.cache.state.call
        if works is None or call is None:
            return self.original(hidden_states)
        dim = hidden_states.shape[-1]
        rows = hidden_states.reshape(-1, dim)  # (all tokens of the call, dim): LN2 of the attention residual
        out = _Output(rows)
        stored = self.cache.reference()
        made: dict[int, torch.Tensor] = {}
        for work in works:
            if work.refresh_rows is not None:
                mlp = self.original(work.refresh_rows.take(rows))  # (frames, tokens, dim)
                out.put(work.refresh_rows, mlp)
                made.update({j: mlp[n] for n, j in enumerate(work.refresh)})
            for batch in work.batches:
                sources = [call.frames[j].source for j in batch.positions]
                base = [made[s] if s is not None else stored.mlp for s in sources]
                values = None
                if batch.dynamic.shape[1]:
                    values = self.original(rows[batch.rows.index.gather(1, batch.dynamic)])  # (frames, count, dim)
                out.put_mixed(batch.rows, base, batch.dynamic, values)
        last = max(made, default=None)
        if last is not None:
            stored.mlp = _keep(made[last])
        return out.result().view_as(hidden_states)
