"""The attention math of one ViT block, computed from the block's own weights on any subset of its tokens.

Encoder methods recompute parts of an attention (STC-Cacher: keys of every token, queries and values of a few) or
change it (ToMe: proportional attention over merged tokens). `ViTAttention` gives the projections of the two layouts
the supported towers use, always through the model's own modules and functions:

- SigLIP / CLIP (`SiglipAttention`, `CLIPAttention`): `q_proj`, `k_proj`, `v_proj`, `out_proj`, scale `scale`;
- Qwen2-VL / Qwen2.5-VL / Qwen3-VL (`VisionAttention`, `Qwen2_5_VLVisionAttention`, `Qwen3VLVisionAttention`): one
  fused `qkv` (rows: all query heads, then keys, then values), `proj`, scale `scaling`, and 2-D rotary embeddings on
  queries and keys, applied by the model module's own `apply_rotary_pos_emb_vision`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (..., head_dim) for the same rows as the tokens


class ViTAttention:
    """Projections of one block's attention module (see module docstring). Tensors are `(..., dim)` token rows."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.fused = hasattr(module, "qkv")
        if self.fused:
            self.num_heads = int(module.num_heads)
            self.scale = float(module.scaling)
            self.dim = int(module.qkv.in_features)
            rotary = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb_vision", None)
            if rotary is None:
                raise TypeError(f"{type(module).__name__}: its module defines no apply_rotary_pos_emb_vision")
            self._rotary: Callable[..., tuple[torch.Tensor, torch.Tensor]] = rotary
        elif all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj")):
            self.num_heads = int(module.num_heads)
            self.scale = float(module.scale)
            self.dim = int(module.q_proj.in_features)
            if getattr(module, "is_causal", False):
                raise TypeError(f"{type(module).__name__} is causal; encoder methods expect a bidirectional ViT")
        else:
            raise TypeError(
                f"{type(module).__name__} is not a supported ViT attention (SigLIP/CLIP q/k/v/out projections or the "
                "Qwen-VL fused qkv)"
            )
        self.head_dim = self.dim // self.num_heads

    # -- projections -----------------------------------------------------------------------------------------------
    def _fused_part(self, x: torch.Tensor, part: int) -> torch.Tensor:
        qkv = self.module.qkv
        rows = slice(part * self.dim, (part + 1) * self.dim)
        bias = qkv.bias[rows] if qkv.bias is not None else None
        return F.linear(x, qkv.weight[rows], bias)

    def _rotate(self, x: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        if rotary is None:
            raise ValueError(f"{type(self.module).__name__} needs its rotary position_embeddings")
        heads = x.unflatten(-1, (self.num_heads, self.head_dim))  # (..., heads, head_dim)
        cos, sin = rotary
        return self._rotary(heads, heads, cos, sin)[0].flatten(-2)

    def queries(self, x: torch.Tensor, rotary: Rotary | None = None) -> torch.Tensor:
        """`(..., dim)` queries of the rows `x` (rotated for the Qwen towers)."""
        if not self.fused:
            return self.module.q_proj(x)
        return self._rotate(self._fused_part(x, 0), rotary)

    def keys(self, x: torch.Tensor, rotary: Rotary | None = None) -> torch.Tensor:
        """`(..., dim)` keys of the rows `x` (rotated for the Qwen towers)."""
        if not self.fused:
            return self.module.k_proj(x)
        return self._rotate(self._fused_part(x, 1), rotary)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., dim)` values of the rows `x`."""
        return self.module.v_proj(x) if not self.fused else self._fused_part(x, 2)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The output projection of `(..., dim)` attention outputs (heads concatenated)."""
        return self.module.proj(x) if self.fused else self.module.out_proj(x)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., dim)` -> `(..., heads, head_dim)`."""
        return x.unflatten(-1, (self.num_heads, self.head_dim))
