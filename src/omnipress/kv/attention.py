"""omnipress's attention path: an `AttentionInterface` entry that wraps the model's own implementation.

While a press is active, the language model's text config points at `"omnipress:<base>"` (for example
`"omnipress:sdpa"`). The registered function

- runs the model's own `<base>` attention unchanged on ordinary cache layers (so an untouched prompt is bit-identical),
  then hands the post-RoPE queries, keys and values of a prefill to the active session, which may compress the layer;
- attends over a `PackedLayer` (ragged, per-head lengths) exactly: one dense kernel call when every head has the same
  length, otherwise one call per KV head (pure PyTorch, any device), or flash-attn's varlen kernel on CUDA when it is
  installed.

Nothing in transformers is patched: the function is registered under a new name, and the text config's
`_attn_implementation` is restored on context exit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..cache import PackedLayer

PREFIX = "omnipress:"


class AttentionSession(Protocol):
    """What the attention path needs from an active press context."""

    def current_layer(self, module: nn.Module) -> Any: ...

    def after_attention(
        self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> None: ...


_SESSIONS: WeakKeyDictionary[nn.Module, AttentionSession] = WeakKeyDictionary()


def wrapped_name(base: str | None) -> str:
    """The registered implementation name that wraps `base` (registering it on first use)."""
    base = base or "eager"
    if base.startswith(PREFIX):
        raise ValueError(
            f"attention implementation {base!r} is already an omnipress wrapper (nested press contexts "
            "on one model are not supported; compose methods inside one context instead)"
        )
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(name, omnipress_attention)
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(base)
        if mask_fn is not None:
            AttentionMaskInterface.register(name, mask_fn)
    return name


def attach(module: nn.Module, session: AttentionSession) -> None:
    _SESSIONS[module] = session


def detach(module: nn.Module) -> None:
    _SESSIONS.pop(module, None)


def _base_name(module: nn.Module) -> str:
    name = module.config._attn_implementation or "eager"
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def base_attention(module: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """The model's own attention function for `module` (what its config named before omnipress wrapped it)."""
    base = _base_name(module)
    if base == "eager":
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if eager is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward as eager
        return eager
    return ALL_ATTENTION_FUNCTIONS[base]


def omnipress_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention entry registered as `omnipress:<base>` (see module docstring)."""
    session = _SESSIONS.get(module)
    layer = session.current_layer(module) if session is not None else None
    if isinstance(layer, PackedLayer):
        return packed_attention(module, query, layer, **kwargs)
    out = base_attention(module)(module, query, key, value, attention_mask, **kwargs)
    if session is not None:
        session.after_attention(module, query, key, value)
    return out


def tail_causal_mask(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
    """`(q_len, kv_len)` bool mask (True = attend): all earlier entries visible, the last `q_len` entries causal."""
    rows = torch.arange(q_len, device=device).unsqueeze(1)
    cols = torch.arange(kv_len, device=device).unsqueeze(0)
    return cols <= rows + (kv_len - q_len)


def packed_attention(
    module: nn.Module,
    query: torch.Tensor,
    layer: PackedLayer,
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Exact attention of `query` `(batch, q_heads, q, dim)` over a packed layer that already holds the new tokens.

    Returns `(batch, q, q_heads, dim_v)` like transformers' attention functions. A new token sees every kept entry
    and the new tokens before it. Uniform layers under sdpa/eager call the model's own kernel on the dense view (so
    keeping everything is bit-identical); other layers and kernels use one SDPA call per KV head.
    """
    bsz, q_heads, q_len, _ = query.shape
    kv_heads = layer.num_heads
    groups = q_heads // kv_heads
    if layer.is_uniform and _base_name(module) in ("sdpa", "eager"):
        keys, values = layer.dense()  # (batch, kv_heads, seq, dim)
        mask = None
        if q_len > 1:
            allowed = tail_causal_mask(q_len, keys.shape[2], query.device)[None, None]
            mask = _mask_for(module, allowed, query.dtype)
        return base_attention(module)(module, query, keys, values, mask, scaling=scaling, dropout=dropout, **kwargs)
    if query.is_cuda and _flash_varlen() is not None:
        return _flash_varlen_attention(query, layer, scaling), None
    key_segs, value_segs = layer.segments()
    out = query.new_empty(bsz, q_heads, q_len, value_segs[0].shape[-1])
    for seg, (k, v) in enumerate(zip(key_segs, value_segs)):
        b, h = divmod(seg, kv_heads)
        q = query[b, h * groups : (h + 1) * groups]  # (groups, q, dim)
        mask = tail_causal_mask(q_len, k.shape[0], query.device) if q_len > 1 else None
        out[b, h * groups : (h + 1) * groups] = F.scaled_dot_product_attention(
            q.unsqueeze(0), k[None, None], v[None, None], attn_mask=mask, scale=scaling
        )[0]
    return out.transpose(1, 2).contiguous(), None


def _mask_for(module: nn.Module, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask for sdpa, an additive float mask for eager."""
    if _base_name(module) == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    return allowed


def _flash_varlen() -> Callable[..., torch.Tensor] | None:
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def _flash_varlen_attention(
    query: torch.Tensor, layer: PackedLayer, scaling: float | None, kernel: Callable[..., torch.Tensor] | None = None
) -> torch.Tensor:
    """flash-attn varlen over the packed layer: every (batch, kv head) is one sequence with `groups` query heads.

    `kernel` defaults to `flash_attn.flash_attn_varlen_func` (tests pass a pure-PyTorch stand-in with its semantics).
    """
    kernel = kernel or _flash_varlen()
    bsz, q_heads, q_len, dim = query.shape
    kv_heads = layer.num_heads
    groups = q_heads // kv_heads
    # (batch, q_heads, q, dim) -> (batch*kv_heads*q, groups, dim): one varlen "sequence" per kv head
    q = query.view(bsz, kv_heads, groups, q_len, dim).permute(0, 1, 3, 2, 4).reshape(-1, groups, dim)
    n_seg = bsz * kv_heads
    cu_q = torch.arange(0, (n_seg + 1) * q_len, q_len, device=query.device, dtype=torch.int32)
    cu_k = torch.nn.functional.pad(torch.cumsum(layer.lengths, 0), (1, 0)).to(torch.int32)
    out = kernel(
        q,
        layer.keys.unsqueeze(1),
        layer.values.unsqueeze(1),
        cu_q,
        cu_k,
        q_len,
        int(layer.lengths.max()),
        softmax_scale=scaling,
        causal=True,  # bottom-right aligned: new tokens see every kept entry and the new tokens before them
    )  # (batch*kv_heads*q, groups, dim_v)
    out = out.view(bsz, kv_heads, q_len, groups, -1).permute(0, 2, 1, 3, 4)
    return out.reshape(bsz, q_len, q_heads, -1)
