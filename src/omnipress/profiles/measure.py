"""Measure head profiles on calibration prompts (one captured prefill per prompt).

- `redundancy_profile`: MixKV's offline per-(layer, KV head) key redundancy (mean pairwise key cosine similarity,
  averaged over prompts), the table the main MixKV code reads instead of the online value.
- `modality_head_profile`: a SparseMM-style "visual head" (or audio head) score: the attention mass the last
  `window` prompt queries of each KV head (averaged over its query group) put on the tokens of a modality, averaged
  over prompts. SparseMM locates visual heads with OCR probing on its own data; this is the offline-friendly
  approximation omnipress ships, and any other score table can be loaded with `HeadProfile.load`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..kv.scoring import reduce_gqa, redundancy_weight, window_attention
from ..kv.session import capture_prefill
from .head_profile import HeadProfile
from .store import ModelFingerprint


def _mean_over_prompts(model: nn.Module, prompts: Iterable[Mapping[str, Any]], per_layer) -> tuple[torch.Tensor, int]:
    total: torch.Tensor | None = None
    count = 0
    for inputs in prompts:
        capture, _ = capture_prefill(model, **inputs)
        table = torch.stack([per_layer(q, k, v, s, capture.spans) for q, k, v, s in capture.layers])
        total = table if total is None else total + table
        count += 1
    if total is None:
        raise ValueError("give at least one calibration prompt")
    return total / count, count


def redundancy_profile(model: nn.Module, prompts: Iterable[Mapping[str, Any]], *, name: str = "") -> HeadProfile:
    """Per-(layer, KV head) mean pairwise key cosine similarity, averaged over `prompts` (model input dicts)."""

    def per_layer(q, k, v, scaling, spans):
        return redundancy_weight(k.float()).mean(0)  # (kv_heads,)

    table, count = _mean_over_prompts(model, prompts, per_layer)
    return HeadProfile(
        table,
        kind="key_redundancy",
        model=name or type(model).__name__,
        fingerprint=ModelFingerprint.of(model, name),
        calibration={"prompts": count},
        meta={"prompts": count},
    )


def modality_head_profile(
    model: nn.Module,
    prompts: Iterable[Mapping[str, Any]],
    *,
    modality: str = "vision",
    window: int = 32,
    name: str = "",
) -> HeadProfile:
    """Attention mass of the last `window` queries on `modality` tokens (`"vision"`, `"image"`, `"video"`,
    `"audio"`) per (layer, KV head), averaged over `prompts`."""

    def per_layer(q, k, v, scaling, spans):
        mask = spans.mask(modality, device=k.device)
        if not bool(mask.any()):
            raise ValueError(f"a calibration prompt has no {modality} tokens: {spans.summary()}")
        w = min(window, k.shape[2])
        attn = window_attention(q[:, :, -w:].float(), k.float(), scaling=scaling)  # (batch, q_heads, w, N)
        mass = attn[..., mask].sum(-1).mean(-1)  # (batch, q_heads)
        return reduce_gqa(mass, k.shape[1]).mean(0)  # (kv_heads,)

    table, count = _mean_over_prompts(model, prompts, per_layer)
    return HeadProfile(
        table,
        kind=f"{modality}_heads",
        model=name or type(model).__name__,
        fingerprint=ModelFingerprint.of(model, name),
        calibration={"prompts": count},
        settings={"window": window},
        meta={"prompts": count, "window": window},
    )
