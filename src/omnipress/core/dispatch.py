"""The one attention entry omnipress registers: `omnipress:<base>` wraps the model's own `<base>` attention.

While any omnipress method is active on a model, its language model's config names `"omnipress:<base>"` (for
example `"omnipress:sdpa"`). The registered function looks up the model's session (per model, no global counter)
and lets it decide: on an ordinary cache layer it runs the model's own `<base>` kernel unchanged (an untouched prompt
stays bit-identical) and then tells every active listener; on a `RaggedLayer` it attends over the ragged cache.

Nothing in transformers is patched: the function is registered under a new name and each session restores the
config on exit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..cache.attention import ragged_attention
from ..cache.ragged import RaggedLayer

PREFIX = "omnipress:"

# attention module -> the session that serves it (weak: a dropped model frees its entries)
ROUTES: WeakKeyDictionary[nn.Module, Any] = WeakKeyDictionary()

# keyword arguments an attention layer may pass that change the attention itself; a ragged layer either honours
# them (sliding_window) or refuses them, never drops them
_UNSUPPORTED_ON_RAGGED = ("softcap", "s_aux", "sinks", "position_bias", "alibi_slopes")


def wrapped_name(base: str | None) -> str:
    """The registered implementation name that wraps `base` (registering it on first use)."""
    base = base or "eager"
    if base.startswith(PREFIX):
        raise ValueError(f"attention implementation {base!r} is already wrapped by omnipress")
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(name, omnipress_attention)
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(base)
        if mask_fn is not None:
            AttentionMaskInterface.register(name, mask_fn)
    return name


def base_name(module: nn.Module) -> str:
    """The model's own implementation name behind a (possibly wrapped) config."""
    name = module.config._attn_implementation or "eager"
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def base_attention(module: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """The model's own attention function for `module` (what its config named before omnipress wrapped it)."""
    base = base_name(module)
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
    session = ROUTES.get(module)
    if session is None:  # a module of the model that no session serves (e.g. an encoder sharing the config)
        return base_attention(module)(module, query, key, value, attention_mask, **kwargs)
    return session.attention(module, query, key, value, attention_mask, kwargs)


def tail_causal_mask(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
    """`(q_len, kv_len)` bool mask (True = attend): all earlier entries visible, the last `q_len` entries causal."""
    rows = torch.arange(q_len, device=device).unsqueeze(1)
    cols = torch.arange(kv_len, device=device).unsqueeze(0)
    return cols <= rows + (kv_len - q_len)


def _model_kernel(
    module: nn.Module,
    base: str,
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, Any]:
    """The model's own sdpa/eager attention over dense key/value views, with a bool `mask` (True = attend; eager
    gets it as an additive mask)."""
    if mask is not None and base == "eager":
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~mask, torch.finfo(query.dtype).min
        )
    forwarded = {k: v for k, v in kwargs.items() if k not in ("scaling", "dropout", "is_causal", "sliding_window")}
    return base_attention(module)(
        module, query, keys, values, mask, scaling=scaling, dropout=0.0, is_causal=False, **forwarded
    )


def attend_ragged(
    module: nn.Module, query: torch.Tensor, layer: RaggedLayer, kwargs: dict[str, Any], *, causal: bool = True
) -> tuple[torch.Tensor, None]:
    """Exact attention of `query` over a ragged layer that already holds the new tokens.

    A uniform layer under sdpa/eager runs the model's own kernel on a dense view of the buffers (so a layer that
    keeps everything is bit-identical to the untouched model), and so does a non-causal (cross-attention) layer
    whose segments share one capacity, its empty slots masked; everything else goes through
    `omnipress.cache.attention.ragged_attention` (one call per layer).
    """
    for name in _UNSUPPORTED_ON_RAGGED:
        if kwargs.get(name) is not None:
            raise ValueError(
                f"{type(module).__name__} passes `{name}` to its attention, which omnipress's compressed (ragged) "
                "cache does not support; run this model without KV compression"
            )
    if kwargs.get("output_attentions"):
        raise ValueError("output_attentions is not available on a compressed (ragged) cache layer")
    sliding_window = kwargs.get("sliding_window")
    scaling = kwargs.get("scaling")
    base = base_name(module)
    if sliding_window is None and base in ("sdpa", "eager"):
        mask: torch.Tensor | None = None
        if layer.is_uniform:
            keys, values = layer.dense()  # (batch, kv_heads, seq, dim) views, no copy
            q_len = query.shape[2]
            if causal and q_len > 1:
                mask = tail_causal_mask(q_len, keys.shape[2], query.device)[None, None]
            return _model_kernel(module, base, query, keys, values, mask, scaling, kwargs)
        if not causal and layer.equal_capacity:
            # a compressed cross-attention layer laid out with one capacity: the model's kernel on the buffers, with
            # the empty slots masked (one fused call instead of the paged path's per-page work)
            keys, values, filled = layer.capacity_view()
            groups = query.shape[1] // layer.num_heads
            mask = filled.repeat_interleave(groups, dim=1).unsqueeze(2)  # (batch, q_heads, 1, capacity)
            return _model_kernel(module, base, query, keys, values, mask, scaling, kwargs)
    out = ragged_attention(query, layer, scaling=scaling, causal=causal, sliding_window=sliding_window)
    return out, None
