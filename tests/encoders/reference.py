"""Brute-force references for the encoder methods, written from the papers' equations, independent of the code
under test (no omnipress.encoders import).

`STCReference` computes every vision block of a tower the slow way (STC spec §1.2.1): dense projections of every token,
attention as an explicit softmax with a mask per attention segment, and the dynamic tokens picked by a full sort.
It is applied with forward hooks that replace each block's output, so the tower's own embedding, window permutation,
merger and deepstack code runs around it.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def _attention_parts(block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    if hasattr(block, "attn"):
        return block.norm1, block.attn, block.norm2, block.mlp
    return block.layer_norm1, block.self_attn, block.layer_norm2, block.mlp


def qkv(attn: nn.Module, h: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    """`(rows, heads, head_dim)` queries, keys, values of the rows `h`, through the module's own weights."""
    heads = int(attn.num_heads)
    if hasattr(attn, "qkv"):
        q, k, v = attn.qkv(h).reshape(h.shape[0], 3, heads, -1).unbind(1)
        rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
        q, k = rotate(q, k, rotary[0], rotary[1])
        return q, k, v
    return tuple(p(h).reshape(h.shape[0], heads, -1) for p in (attn.q_proj, attn.k_proj, attn.v_proj))


def out_proj(attn: nn.Module, a: torch.Tensor) -> torch.Tensor:
    return attn.proj(a) if hasattr(attn, "proj") else attn.out_proj(a)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Every query over every key of its own segment, one head at a time: `(rows, heads, d)` -> `(rows, heads * d)`."""
    scale = q.shape[-1] ** -0.5
    allowed = segment[:, None] == segment[None, :]
    heads = []
    for h in range(q.shape[1]):
        logits = (q[:, h] @ k[:, h].T) * scale
        logits = logits.masked_fill(~allowed, -math.inf)
        heads.append(logits.softmax(-1) @ v[:, h])
    return torch.cat(heads, dim=-1)


@dataclass
class _Ref:
    key: torch.Tensor
    value: torch.Tensor
    attn: torch.Tensor
    mlp: torch.Tensor


@dataclass
class STCReference:
    """The STC-Cacher, brute force. `frames` of the current call are set by a tower pre-hook."""

    update_ratio: float = 0.25
    interval: int = 2
    mode: str = "ratio"
    threshold: float = 0.85
    index: int = 0
    refs: dict[int, _Ref] = field(default_factory=dict)
    ref_tokens: int | None = None
    recomputed: list[list[int]] = field(default_factory=list)  # per frame of the stream, per layer
    _frames: list[int] = field(default_factory=list)

    def hooks(self, tower: nn.Module, blocks: nn.ModuleList) -> list[Any]:
        handles = [tower.register_forward_pre_hook(self._start, with_kwargs=True)]
        handles.append(tower.register_forward_hook(self._finish, with_kwargs=True))
        for layer, block in enumerate(blocks):
            handles.append(block.register_forward_hook(self._block_hook(layer), with_kwargs=True))
        return handles

    def _start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        grid = kwargs.get("grid_thw")
        if grid is not None:
            self._frames = [int(h * w) for t, h, w in grid.tolist() for _ in range(int(t))]
        else:
            self._frames = [-1] * args[0].shape[0]  # tokens known at the first block
        self._call_recomputed = [[] for _ in self._frames]

    def _finish(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        for n, tokens in enumerate(self._frames):
            refresh = self._refresh_of[n]
            if refresh:
                self.ref_tokens = tokens
        self.recomputed.extend(self._call_recomputed)
        self.index += len(self._frames)

    def _block_hook(self, layer: int):
        def hook(block: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            cu = kwargs.get("cu_seqlens")
            rotary = kwargs.get("position_embeddings")
            return self._block(block, layer, x, cu, rotary)

        return hook

    def _block(self, block: nn.Module, layer: int, x: torch.Tensor, cu: torch.Tensor | None, rotary: Any) -> Any:
        norm1, attn, norm2, mlp = _attention_parts(block)
        rows = x.reshape(-1, x.shape[-1])
        if self._frames and self._frames[0] == -1:
            self._frames = [x.shape[1]] * x.shape[0]
        segment = torch.zeros(rows.shape[0], dtype=torch.long)
        bounds = cu.tolist() if cu is not None else [n * x.shape[1] for n in range(x.shape[0] + 1)]
        for s, (a, b) in enumerate(itertools.pairwise(bounds)):
            segment[a:b] = s
        out = torch.empty_like(rows)
        start, ref_tokens = 0, self.ref_tokens
        self._refresh_of = []
        for n, tokens in enumerate(self._frames):
            index = self.index + n
            sl = slice(start, start + tokens)
            start += tokens
            refresh = ref_tokens is None or ref_tokens != tokens or index % self.interval == 0
            self._refresh_of.append(refresh)
            xf = rows[sl]
            rot = (rotary[0][sl], rotary[1][sl]) if rotary is not None else None
            h = norm1(xf)
            q, k, v = qkv(attn, h, rot)
            seg = segment[sl]
            if refresh:
                a_out = out_proj(attn, softmax_attention(q, k, v, seg))
                x1 = xf + a_out
                m_out = mlp(norm2(x1))
                out[sl] = x1 + m_out
                self.refs[layer] = _Ref(k.flatten(1), v.flatten(1), a_out, m_out)
                ref_tokens = tokens
                self._call_recomputed[n].append(tokens)
                continue
            ref = self.refs[layer]
            sim = torch.nn.functional.cosine_similarity(k.flatten(1).float(), ref.key.float(), dim=-1)
            order = sorted(range(tokens), key=lambda t: float(sim[t]))  # least similar first
            cap = max(1, min(tokens, math.floor(tokens * self.update_ratio)))
            if self.mode == "ratio":
                dynamic = order[:cap]
            else:
                dynamic = [t for t in order if float(sim[t]) < self.threshold][:cap]
            dyn = torch.tensor(sorted(dynamic), dtype=torch.long)
            v_mix = ref.value.clone()
            v_mix[dyn] = v.flatten(1)[dyn]
            a_all = out_proj(attn, softmax_attention(q, k, v_mix.unflatten(1, v.shape[1:]), seg))
            a_out = ref.attn.clone()
            a_out[dyn] = a_all[dyn]
            x1 = xf + a_out
            m_all = mlp(norm2(x1))
            m_out = ref.mlp.clone()
            m_out[dyn] = m_all[dyn]
            out[sl] = x1 + m_out
            self._call_recomputed[n].append(len(dynamic))
        return out.view_as(x)


# -- ToMe ------------------------------------------------------------------------------------------------------------
def tome_matching(metric: torch.Tensor, r: int, protect_first: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """ToMe's bipartite soft matching of one sequence `(tokens, dim)`, by loops: `(kept A tokens, [(A, B) merged])`
    with A = even positions, B = odd positions (indices within the sets). Kept A tokens come in ToMe's order: by
    decreasing best similarity (in index order when the first token is a protected class token)."""
    a, b = metric[0::2], metric[1::2]
    edges = []
    for i in range(a.shape[0]):
        sims = [float(a[i] @ b[j] / (a[i].norm() * b[j].norm())) for j in range(b.shape[0])]
        best = max(range(len(sims)), key=lambda j: sims[j])
        edges.append((-math.inf if protect_first and i == 0 else sims[best], i, best))
    edges.sort(key=lambda e: -e[0])
    merged = [(i, j) for _, i, j in edges[:r]]
    kept = [i for _, i, _ in edges[r:]]
    return (sorted(kept) if protect_first else kept), merged


def tome_block(block: nn.Module, x: torch.Tensor, size: torch.Tensor, r: int, protect_first: bool) -> tuple:
    """One SigLIP/CLIP block under ToMe for one sequence `x` `(tokens, dim)` with token sizes `size` `(tokens,)`:
    proportional attention (`+ log size`), size-weighted merge of `r` tokens, MLP. Returns `(x, size)`."""
    norm1, attn, norm2, mlp = _attention_parts(block)
    q, k, v = qkv(attn, norm1(x), None)
    scale = q.shape[-1] ** -0.5
    heads = []
    for h in range(q.shape[1]):
        logits = (q[:, h] @ k[:, h].T) * scale + size.log()[None, :]
        heads.append(logits.softmax(-1) @ v[:, h])
    x = x + out_proj(attn, torch.cat(heads, -1))
    if r:
        kept, merged = tome_matching(k.mean(1), r, protect_first)
        a, b = x[0::2], x[1::2]
        sa, sb = size[0::2], size[1::2]
        total_b = b * sb[:, None]
        size_b = sb.clone()
        for i, j in merged:
            total_b[j] = total_b[j] + a[i] * sa[i]
            size_b[j] = size_b[j] + sa[i]
        x = torch.cat([a[kept], total_b / size_b[:, None]])
        size = torch.cat([sa[kept], size_b])
    return x + mlp(norm2(x)), size
