"""STC-Cacher's token selection: which tokens of a frame moved since the reference frame (pure functions).

STC (arXiv 2512.00891, https://arxiv.org/abs/2512.00891), spec §1.2.1 steps 2-3: per encoder layer, the similarity of
every token's key to the reference frame's key *at the same patch position* (over the full key, all heads
concatenated, no motion alignment); the tokens least similar are "dynamic" and recomputed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METRICS = ("cosine", "l2")
MODES = ("ratio", "threshold")


def num_dynamic(tokens: int, update_ratio: float) -> int:
    """Tokens recomputed per selective frame: `max(1, min(T, floor(T * r)))` (the official rule; 182 of SigLIP-384's
    729 at r = 0.25)."""
    return max(1, min(tokens, math.floor(tokens * update_ratio)))


def key_similarity(keys: torch.Tensor, reference: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Similarity of each token's key to the reference key at the same position; lower means "moved more".

    Parameters
    ----------
    keys, reference:
        `(frames, tokens, dim)`: the current frames' keys and their reference frames' keys (`dim` = all heads).
    metric:
        `"cosine"` (the paper's) or `"l2"` (minus the Euclidean distance, an ablation).

    Returns
    -------
    torch.Tensor
        `(frames, tokens)` float32.
    """
    keys, reference = keys.float(), reference.float()
    if metric == "cosine":
        return F.cosine_similarity(keys, reference, dim=-1)
    if metric == "l2":
        return -(keys - reference).norm(dim=-1)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def select_dynamic(
    similarity: torch.Tensor, update_ratio: float, mode: str = "ratio", threshold: float = 0.85
) -> list[torch.Tensor]:
    """Indices of the dynamic tokens of each frame, ascending.

    Parameters
    ----------
    similarity:
        `(frames, tokens)` from `key_similarity`.
    update_ratio:
        `"ratio"` mode: exactly `num_dynamic(tokens, update_ratio)` tokens per frame, the least similar (top-k with
        largest=False, as the official code). `"threshold"` mode: it is the cap.
    mode:
        `"ratio"` (the paper's) or `"threshold"`: the tokens with similarity `< threshold`, at most the cap, the least
        similar first (an ablation; a frame may then recompute nothing).

    Returns
    -------
    list[torch.Tensor]
        One `(count,)` long tensor per frame. In `"ratio"` mode they all have the same length and stack to
        `(frames, count)`.
    """
    frames, tokens = similarity.shape
    cap = num_dynamic(tokens, update_ratio)
    order = torch.topk(similarity, cap, dim=1, largest=False).indices  # (frames, cap), least similar first
    if mode == "ratio":
        return list(order.sort(dim=1).values)
    if mode != "threshold":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    counts = (similarity < threshold).sum(dim=1).clamp(max=cap).tolist()
    return [order[f, : counts[f]].sort().values for f in range(frames)]
