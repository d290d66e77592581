"""A brute-force reference: full-cache attention that hides chosen prompt entries per layer and KV head.

Decoding a compressed cache must equal decoding the untouched cache with the evicted entries masked out; this module
provides the masked side, in plain eager math, registered as its own attention implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import AttentionInterface

NAME = "omnipress_test_masked"
_KEEP: dict[int, torch.Tensor] = {}  # layer -> (batch, kv_heads, prompt_len) bool, True = visible to new tokens


def masked_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    bsz, q_heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups = q_heads // kv_heads
    scaling = scaling if scaling is not None else dim**-0.5
    k = key.repeat_interleave(groups, dim=1)
    v = value.repeat_interleave(groups, dim=1)
    logits = (query.float() @ k.float().transpose(-1, -2)) * scaling  # (batch, q_heads, q, kv)
    q_pos = torch.arange(kv_len - q_len, kv_len).view(q_len, 1)
    k_pos = torch.arange(kv_len).view(1, kv_len)
    allowed = (k_pos <= q_pos).expand(bsz, q_heads, q_len, kv_len).clone()
    if attention_mask is not None:  # transformers' own mask (left padding of a batch), registered below
        mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        allowed &= mask[..., -q_len:, -kv_len:].expand(bsz, q_heads, q_len, kv_len)
    keep = _KEEP.get(module.layer_idx)
    if keep is not None:
        n = keep.shape[-1]
        hidden = ~keep.repeat_interleave(groups, dim=1)  # (batch, q_heads, prompt_len)
        is_new = (q_pos >= n).view(1, 1, q_len, 1)
        allowed[..., :n] &= ~(hidden.unsqueeze(2) & is_new)
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = logits.softmax(-1).nan_to_num(0.0).to(value.dtype) @ v  # padding queries see nothing: zeros, not NaN
    return out.transpose(1, 2).contiguous(), None


def install(keep: dict[int, torch.Tensor]) -> None:
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, masked_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _KEEP.clear()
    _KEEP.update(keep)


def keep_masks_from_cache(cache, prompt_len: int) -> dict[int, torch.Tensor]:
    """Per layer, which prompt entries a compressed (packed) cache still holds."""
    masks = {}
    for idx, layer in enumerate(cache.layers):
        keep = torch.zeros(layer.batch_size * layer.num_heads, prompt_len, dtype=torch.bool)
        for seg, pos in enumerate(layer.head_positions()):
            pos = pos.long()
            keep[seg, pos[pos < prompt_len]] = True
        masks[idx] = keep.view(layer.batch_size, layer.num_heads, prompt_len)
    return masks


@contextlib.contextmanager
def attention_as(model, name: str = NAME) -> Iterator[None]:
    """Run `model`'s language model with the registered attention implementation `name` inside the block."""
    config = model.config.get_text_config()
    saved, config._attn_implementation = config._attn_implementation, name
    try:
        yield
    finally:
        config._attn_implementation = saved
