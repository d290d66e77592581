"""Exact attention over a `RaggedLayer`: one call per layer, no per-head loop, no host-device sync.

`ragged_attention(query, layer, ...)` attends the new queries `(batch, q_heads, q, dim)` over every segment of the
layer, which already holds the new tokens (they are its last `q` entries). A new token sees every kept entry and the
new tokens before it (`causal=True`, self-attention) or every entry (`causal=False`, cross-attention). Each query
head reads the KV head of its GQA group (`repeat_kv` layout).

Backends (`backend=`):

- `"varlen"`: torch's own FlashAttention varlen kernel (`torch.nn.attention.varlen.varlen_attn`, CUDA, fp16/bf16),
  called once per layer with one varlen "sequence" per (row, KV head) segment: `cu_seq_k` = the segment starts,
  `seqused_k` = the segment lengths (the capacity layout of the layer is exactly what that kernel reads), and the
  `groups` query heads of a KV head as that sequence's heads (grouped-query attention).
- `"flash_attn"`: the same call through the optional `flash-attn` package (needs a version whose
  `flash_attn_varlen_func` takes `seqused_k`).
- `"torch"`: pure PyTorch on any device and dtype, and the reference: the buffer is read as `(pages, page_size, dim)`
  without a copy, every page attends with its segment's queries in one batched matmul, and the pages of a segment
  are merged with their log-sum-exp (split-KV, as flash-decoding does). Sliding windows are applied here from the
  stored cache columns, so a compressed cache honours them exactly.
- `"auto"` (default): `"varlen"` on CUDA for fp16/bf16 without a sliding window when the installed torch has it,
  else `"torch"`.

`set_default_backend` / `use_backend` choose the default; a layer's `attention_backend` attribute overrides it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import torch

from .ragged import RaggedLayer

BACKENDS = ("auto", "varlen", "flash_attn", "torch")
_DEFAULT = ["auto"]


def set_default_backend(name: str) -> None:
    """Choose the ragged attention backend used when a layer does not name one (`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown ragged attention backend {name!r}; expected one of {BACKENDS}")
    _DEFAULT[0] = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """`with use_backend("torch"): ...` runs ragged attention on that backend inside the block."""
    saved = _DEFAULT[0]
    set_default_backend(name)
    try:
        yield
    finally:
        _DEFAULT[0] = saved


def ragged_attention(
    query: torch.Tensor,
    layer: RaggedLayer,
    *,
    scaling: float | None = None,
    causal: bool = True,
    sliding_window: int | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention of `query` `(batch, q_heads, q, dim)` over `layer`; returns `(batch, q, q_heads, dim_v)` like
    transformers' attention functions (see the module docstring for the rules and backends)."""
    bsz, q_heads, _q_len, dim = query.shape
    if (bsz, q_heads % layer.num_heads) != (layer.batch_size, 0):
        raise ValueError(
            f"query (batch {bsz}, {q_heads} heads) does not fit a cache of batch {layer.batch_size} with "
            f"{layer.num_heads} kv heads"
        )
    if scaling is None:
        scaling = dim**-0.5
    name = backend or getattr(layer, "attention_backend", None) or _DEFAULT[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown ragged attention backend {name!r}; expected one of {BACKENDS}")
    if name == "auto":
        name = "varlen" if _varlen_usable(query, sliding_window) else "torch"
    if name in ("varlen", "flash_attn") and sliding_window is not None:
        raise ValueError(f"the {name} backend cannot apply a sliding window to a compressed cache; use 'torch'")
    if name in ("varlen", "flash_attn") and not (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)):
        raise RuntimeError(
            f"the {name} backend runs FlashAttention on CUDA fp16/bf16 tensors, got {query.device.type} {query.dtype}; "
            "use backend='torch' (or 'auto')"
        )
    if name == "varlen":
        kernel = _torch_varlen()
        if kernel is None:
            raise RuntimeError("this torch has no usable torch.nn.attention.varlen.varlen_attn (needs seqused_k)")
        return _varlen_attention(query, layer, scaling, causal, kernel)
    if name == "flash_attn":
        return _varlen_attention(query, layer, scaling, causal, _flash_attn_varlen())
    return _paged_attention(query, layer, scaling, causal, sliding_window)


# -- pure PyTorch: pages + log-sum-exp merge --------------------------------------------------------------------
def _page_meta(layer: RaggedLayer) -> dict[str, Any]:
    """Page geometry of the layer's current layout (cached until the layout changes)."""
    meta = layer._attention_meta.get("pages")
    if meta is not None:
        return meta
    caps = layer.capacities
    device = layer.device
    page = caps[0] if caps and all(c == caps[0] for c in caps) else layer.page_size
    if page == 0 or any(c % page for c in caps):
        raise ValueError(f"segment capacities {caps[:8]}... are not multiples of the page size {page}")
    pages_per_segment = torch.tensor([c // page for c in caps], dtype=torch.long, device=device)
    n_pages = int(sum(c // page for c in caps))
    page_segment = torch.repeat_interleave(
        torch.arange(len(caps), device=device), pages_per_segment, output_size=n_pages
    )
    first_page = torch.cumsum(pages_per_segment, 0) - pages_per_segment
    page_offset = (torch.arange(n_pages, device=device) - first_page[page_segment]) * page  # slot of its first entry
    widest = max((c // page for c in caps), default=0)
    grid = first_page.unsqueeze(1) + torch.arange(widest, device=device)  # (segments, widest) page ids
    grid = torch.where(torch.arange(widest, device=device) < pages_per_segment.unsqueeze(1), grid, n_pages)
    meta = {
        "page": page,
        "n_pages": n_pages,
        "page_segment": page_segment,
        "slots": page_offset.unsqueeze(1) + torch.arange(page, device=device),  # (pages, page)
        "grid": grid,
    }
    layer._attention_meta["pages"] = meta
    return meta


def _paged_attention(
    query: torch.Tensor, layer: RaggedLayer, scaling: float, causal: bool, sliding_window: int | None
) -> torch.Tensor:
    bsz, q_heads, q_len, dim = query.shape
    heads = layer.num_heads
    groups = q_heads // heads
    segments = bsz * heads
    meta = _page_meta(layer)
    page, n_pages = meta["page"], meta["n_pages"]
    rows = groups * q_len  # query rows per segment, ordered (group, new token)
    seg_queries = query.reshape(segments, rows, dim)  # (segments, groups*q, dim): heads h*g..h*g+g-1 read kv head h
    page_queries = seg_queries.index_select(0, meta["page_segment"])  # (pages, rows, dim)
    keys = layer.keys.view(n_pages, page, -1)
    values = layer.values.view(n_pages, page, -1)

    lengths = layer.lengths.index_select(0, meta["page_segment"]).unsqueeze(1)  # (pages, 1)
    slots = meta["slots"]  # (pages, page) entry index inside the segment
    visible = (slots < lengths).unsqueeze(1)  # (pages, 1, page)
    if causal and q_len > 1:
        new_token = torch.arange(q_len, device=query.device).repeat(groups)  # (rows,) index among the new tokens
        last_visible = lengths - q_len + new_token  # (pages, rows)
        visible = visible & (slots.unsqueeze(1) <= last_visible.unsqueeze(2))
    if sliding_window is not None:
        first_token = layer.logical_length - q_len
        query_column = first_token + torch.arange(q_len, device=query.device).repeat(groups)  # (rows,)
        columns = layer.positions.view(n_pages, page).unsqueeze(1)  # (pages, 1, page)
        visible = visible & (columns > (query_column - sliding_window).view(1, -1, 1))
    bias = torch.zeros(visible.shape, dtype=torch.float32, device=query.device).masked_fill_(~visible, float("-inf"))
    if query.dtype == torch.float32 or query.device.type != "cpu":
        # fp32 math (half precision on CUDA only reaches this path with a sliding window)
        logits = torch.baddbmm(bias, page_queries.float(), keys.float().transpose(1, 2), alpha=scaling)
        lse = torch.logsumexp(logits, dim=-1)  # (pages, rows); -inf for a page with nothing visible
        probs = torch.exp(logits - lse.clamp_min(-1e30).unsqueeze(-1))
        partial = torch.bmm(probs.to(values.dtype), values)  # (pages, rows, dim_v)
    else:
        # half precision on the CPU: the fused CPU kernel accumulates in fp32 without copying the cache to fp32
        partial, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            page_queries.unsqueeze(1),
            keys.unsqueeze(1),
            values.unsqueeze(1),
            attn_mask=bias.unsqueeze(1).to(query.dtype),
            scale=scaling,
        )  # (pages, 1, rows, dim_v), (pages, 1, rows)
        partial, lse = partial.squeeze(1), lse.squeeze(1).float()
        lse = lse.masked_fill(~visible.any(-1).expand(n_pages, rows), float("-inf"))  # the kernel gives 0 there

    # merge the pages of each segment with their log-sum-exp weights (each page's partial output is read once)
    grid_lse = torch.cat([lse, lse.new_full((1, rows), float("-inf"))])[meta["grid"]]  # (segments, widest, rows)
    segment_lse = torch.logsumexp(grid_lse, dim=1).clamp_min(-1e30)  # (segments, rows)
    weights = torch.exp(lse - segment_lse.index_select(0, meta["page_segment"]))  # (pages, rows)
    out = partial.new_zeros(segments, rows, partial.shape[-1])
    out.index_add_(
        0, meta["page_segment"], partial * weights.unsqueeze(-1).to(partial.dtype)
    )  # (segments, rows, dim_v)
    out = out.view(bsz, heads, groups, q_len, -1).permute(0, 3, 1, 2, 4)
    return out.reshape(bsz, q_len, q_heads, -1).to(query.dtype)


# -- varlen kernels ----------------------------------------------------------------------------------------------
def _varlen_attention(
    query: torch.Tensor, layer: RaggedLayer, scaling: float, causal: bool, kernel: Callable[..., torch.Tensor]
) -> torch.Tensor:
    """One varlen call: segment `s` is a sequence with `groups` query heads against one KV head."""
    bsz, q_heads, q_len, dim = query.shape
    heads = layer.num_heads
    groups = q_heads // heads
    segments = bsz * heads
    packed = query.view(bsz, heads, groups, q_len, dim).permute(0, 1, 3, 2, 4).reshape(segments * q_len, groups, dim)
    cu_q = layer._attention_meta.get(("cu_q", q_len))
    if cu_q is None:
        cu_q = torch.arange(0, (segments + 1) * q_len, q_len, dtype=torch.int32, device=query.device)
        layer._attention_meta["cu_q", q_len] = cu_q
    out = kernel(
        packed,
        layer.keys.unsqueeze(1),  # (capacity, 1, dim)
        layer.values.unsqueeze(1),
        cu_q,
        layer.starts,
        q_len,
        max(layer.max_length, 1),
        scale=scaling,
        causal=causal and q_len > 1,
        seqused_k=layer.lengths,
    )  # (segments*q, groups, dim_v)
    out = out.view(bsz, heads, q_len, groups, -1).permute(0, 2, 1, 3, 4)
    return out.reshape(bsz, q_len, q_heads, -1)


@lru_cache(maxsize=1)
def _torch_varlen() -> Callable[..., torch.Tensor] | None:
    """torch's varlen kernel behind a uniform call signature, or None when this torch has none with `seqused_k`."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "seqused_k" not in params:
        return None
    gqa = {"enable_gqa": True} if "enable_gqa" in params else {}  # older torch: FlashAttention does GQA by itself
    window_api = "window_size" in params

    def call(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, causal, seqused_k):
        mask = {"window_size": (-1, 0) if causal else (-1, -1)} if window_api else {"is_causal": causal}
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, seqused_k=seqused_k, **gqa, **mask)

    return call


def _flash_attn_varlen() -> Callable[..., torch.Tensor]:
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as error:
        raise RuntimeError("the flash_attn backend needs the flash-attn package (pip install flash-attn)") from error
    if "seqused_k" not in inspect.signature(flash_attn_varlen_func).parameters:
        raise RuntimeError("this flash-attn's flash_attn_varlen_func has no seqused_k; use the 'varlen' backend")

    def call(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, causal, seqused_k):
        return flash_attn_varlen_func(
            q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=scale, causal=causal, seqused_k=seqused_k
        )

    return call


def _varlen_usable(query: torch.Tensor, sliding_window: int | None) -> bool:
    return (
        query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and sliding_window is None
        and query.shape[-1] <= 256
        and _torch_varlen() is not None
    )
