"""Pure tensor functions behind the token pruners (no model, no state), each testable against a brute-force loop.

Shapes: `F` frames of a chunk, `P` tokens per frame, `D` feature width, `C` scoring channels, `k` tokens kept per
frame. Every selection returns per-frame indices in ascending (spatial, raster) order.

- STC-Pruner (arXiv 2512.00891, spec stc_mixkv.md §1.2.2): `low_variance_channels`, `stc_scores`.
- VidCom2 (arXiv 2505.14454): `vidcom2_scores`, `vidcom2_budgets`.
- DivPrune (arXiv 2503.02175): `max_min_diversity`.
- VisionZip (arXiv 2412.04467): `mean_attention_received`, `visionzip_contextual`.
- Uniform: `uniform_indices`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: bandwidths alpha of the multi-scale Gaussian kernel of STC and VidCom2: 2^-3 .. 2^1
GAUSSIAN_BANDWIDTHS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)


def low_variance_channels(tokens: torch.Tensor, keep_ratio: float = 0.5) -> torch.Tensor:
    """Indices of the `floor(keep_ratio * D)` channels of lowest (population) variance over all tokens.

    Parameters
    ----------
    tokens : Tensor
        `(N, D)` features (all tokens of one call, frames flattened).
    keep_ratio : float
        Fraction of channels kept, in (0, 1].

    Returns
    -------
    Tensor
        `(C,)` long channel indices, lowest variance first (the order `torch.topk(largest=False)` gives, which the
        official STC and VidCom2 code use: it matters for STC's temporal memory, which averages chunk means
        channel by channel).
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (N, D), got {tuple(tokens.shape)}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}")
    count = int(tokens.shape[-1] * keep_ratio)
    if count < 1:
        raise ValueError(f"keep_ratio {keep_ratio} of {tokens.shape[-1]} channels keeps no channel")
    variance = tokens.var(dim=0, unbiased=False)  # (D,)
    return torch.topk(variance, k=count, largest=False).indices


def multi_scale_gaussian(
    x: torch.Tensor, anchor: torch.Tensor, bandwidths: Sequence[float] = GAUSSIAN_BANDWIDTHS
) -> torch.Tensor:
    """`sum_alpha exp(-||x - anchor||^2 / (2 alpha))` over the last dimension (`anchor` broadcasts against `x`)."""
    distance = ((x - anchor) ** 2).sum(dim=-1)
    return sum(torch.exp(-distance / (2 * a)) for a in bandwidths)  # type: ignore[return-value]


def stc_scores(
    chunk: torch.Tensor,
    temporal_mean: torch.Tensor,
    *,
    strategy: str = "gaussian",
    alpha: float = 0.5,
) -> torch.Tensor:
    """STC-Pruner token scores of one chunk, on its scoring channels (spec §1.2.2 steps 3-4).

    Parameters
    ----------
    chunk : Tensor
        `(F, P, C)` raw features restricted to the scoring channels (`low_variance_channels`).
    temporal_mean : Tensor
        `(C,)` the temporal anchor before normalisation: the running mean of the per-chunk means (current chunk
        included).
    strategy : str
        `"gaussian"`: `G(x, SCA_f) + G(x, TCA)` with the multi-scale Gaussian `G` (keep the **lowest**);
        `"dual_anchor"`: `alpha (1 - cos(x, TCA)) + (1 - alpha) (1 - cos(x, SCA_f))` (keep the **highest**).
    alpha : float
        Temporal weight of `"dual_anchor"`.

    Returns
    -------
    Tensor
        `(F, P)` scores. Tokens are L2-normalised; the spatial anchor `SCA_f` is the mean of frame `f`'s
        normalised tokens (not renormalised); the temporal anchor is `temporal_mean` normalised.
    """
    if chunk.dim() != 3 or temporal_mean.shape != chunk.shape[-1:]:
        raise ValueError(
            f"expected chunk (F, P, C) and temporal_mean (C,), got {tuple(chunk.shape)} and "
            f"{tuple(temporal_mean.shape)}"
        )
    tokens = F.normalize(chunk, dim=-1)  # (F, P, C)
    spatial = tokens.mean(dim=1, keepdim=True)  # (F, 1, C)
    temporal = F.normalize(temporal_mean, dim=-1).view(1, 1, -1)  # (1, 1, C)
    if strategy == "gaussian":
        return multi_scale_gaussian(tokens, spatial) + multi_scale_gaussian(tokens, temporal)
    if strategy == "dual_anchor":
        temporal_novelty = 1 - F.cosine_similarity(tokens, temporal, dim=-1)
        spatial_novelty = 1 - F.cosine_similarity(tokens, spatial, dim=-1)
        return alpha * temporal_novelty + (1 - alpha) * spatial_novelty
    raise ValueError(f"unknown STC strategy {strategy!r}; expected 'gaussian' or 'dual_anchor'")


def keep_topk(scores: torch.Tensor, k: int, *, largest: bool) -> torch.Tensor:
    """`(F, k)` indices of the `k` highest (`largest`) or lowest scores of every row, ascending per row."""
    return torch.topk(scores, k=k, dim=-1, largest=largest).indices.sort(dim=-1).values


def vidcom2_scores(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VidCom2's per-token similarity to the video mean and to its frame mean (multi-scale Gaussian).

    Parameters
    ----------
    chunk : Tensor
        `(F, P, C)` features on the scoring channels of one video.

    Returns
    -------
    tuple of Tensor
        `(F, P)` similarity to the video centre and `(F, P)` similarity to the frame centre; tokens and centres
        are taken from the L2-normalised tokens (centres not renormalised).
    """
    tokens = F.normalize(chunk, dim=-1)
    video = tokens.mean(dim=(0, 1), keepdim=True)  # (1, 1, C)
    frame = tokens.mean(dim=1, keepdim=True)  # (F, 1, C)
    return multi_scale_gaussian(tokens, video), multi_scale_gaussian(tokens, frame)


def vidcom2_budgets(
    uniqueness: torch.Tensor, base_scale: float, tokens: int, temperature: float = 0.01
) -> torch.Tensor:
    """Per-frame token budgets from frame uniqueness, as VidCom2 allocates them.

    `p = softmax(u / temperature)`, scale `s_f = base_scale * (1 + p_f - mean(p))` clamped to at most 1, budget
    `round(s_f * tokens)` clamped to at least 1. Frames less similar to the whole video get more tokens; the mean
    budget stays about `base_scale * tokens`.

    Parameters
    ----------
    uniqueness : Tensor
        `(F,)` frame uniqueness (VidCom2: minus the mean token similarity to the video centre).
    base_scale : float
        Mean fraction of tokens kept per frame.
    tokens : int
        Tokens per frame `P`.
    """
    probs = torch.softmax((uniqueness - uniqueness.max()) / temperature, dim=0)
    scales = (base_scale * (1 + probs - probs.mean())).clamp(max=1.0)
    return (scales * tokens).round().long().clamp(min=1, max=tokens)


def max_min_diversity(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """DivPrune's greedy solution of the Max-Min Diversity Problem over cosine distance, for every frame at once.

    The first token is the one farthest from its nearest neighbour; each next one is the token whose smallest
    distance to the tokens already chosen is largest. Frames are solved side by side (`k` batched steps, no
    per-frame loop and no host synchronisation).

    Parameters
    ----------
    tokens : Tensor
        `(P, D)` features of one frame (or image), or `(F, P, D)` of `F` frames.
    k : int
        Tokens to choose per frame, `1 <= k <= P`.

    Returns
    -------
    Tensor
        `(k,)` or `(F, k)` indices in the order they were chosen (sort them for spatial order).
    """
    single = tokens.dim() == 2
    batch = tokens.unsqueeze(0) if single else tokens  # (F, P, D)
    if batch.dim() != 3:
        raise ValueError(f"tokens must be (P, D) or (F, P, D), got {tuple(tokens.shape)}")
    frames, count, _ = batch.shape
    if not 1 <= k <= count:
        raise ValueError(f"k must lie in [1, {count}], got {k}")
    unit = F.normalize(batch.float(), dim=-1)
    distance = 1 - unit @ unit.transpose(1, 2)  # (F, P, P)
    if count > 1:
        eye = torch.eye(count, dtype=torch.bool, device=tokens.device)
        nearest = distance.masked_fill(eye, float("inf")).amin(dim=-1)  # (F, P) distance to the nearest other token
    else:
        nearest = distance[:, 0]
    pick = nearest.argmax(dim=-1)  # (F,)
    chosen = [pick]
    taken = torch.zeros(frames, count, dtype=torch.bool, device=tokens.device)
    rows = torch.arange(frames, device=tokens.device)
    taken[rows, pick] = True
    closest = distance[rows, pick]  # (F, P) smallest distance of every token to the chosen set
    for _ in range(k - 1):
        pick = closest.masked_fill(taken, -float("inf")).argmax(dim=-1)
        chosen.append(pick)
        taken[rows, pick] = True
        closest = torch.minimum(closest, distance[rows, pick])
    out = torch.stack(chosen, dim=-1)  # (F, k)
    return out[0] if single else out


def mean_attention_received(tokens: torch.Tensor) -> torch.Tensor:
    """Attention each token receives, averaged over all queries of its frame: VisionZip's dominance score for
    encoders without a [CLS] token (SigLIP), here of one softmax attention head over the tokens themselves.

    `A_f = softmax(X_f X_f^T / sqrt(D))` (rows: queries); the score of token `j` is `mean_i A_f[i, j]`.

    Parameters
    ----------
    tokens : Tensor
        `(F, P, D)` features of `F` frames (computed in float32).

    Returns
    -------
    Tensor
        `(F, P)` float32 scores; each frame's scores sum to 1.
    """
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (frames, tokens, dim), got {tuple(tokens.shape)}")
    x = tokens.float()
    logits = x @ x.transpose(1, 2) / math.sqrt(x.shape[-1])  # (F, P, P)
    return torch.softmax(logits, dim=-1).mean(dim=1)


def visionzip_contextual(tokens: torch.Tensor, metric: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip's contextual tokens of the non-dominant tokens of one frame, or of `F` frames at once.

    `count` targets are taken evenly spaced among the tokens (step `max(1, n // count)`); every other token joins
    the target it is most similar to (dot product of the L2-normalised `metric`), and each contextual token is
    `target + mean(joined tokens)` (the target alone when none joined), as in the VisionZip code.

    Parameters
    ----------
    tokens : Tensor
        `(n, D)` the remaining (non-dominant) tokens in spatial order, or `(F, n, D)`.
    metric : Tensor
        `(n, C)` or `(F, n, C)`: what similarity is measured on (VisionZip: the encoder's keys; here the tokens).
    count : int
        Contextual tokens to make per frame, `1 <= count <= n`.

    Returns
    -------
    tuple of Tensor
        `(count,)` target positions in `tokens` (ascending, the same for every frame) and their merged features,
        `(count, D)` or `(F, count, D)`.
    """
    single = tokens.dim() == 2
    x = tokens.unsqueeze(0) if single else tokens  # (F, n, D)
    m = metric.unsqueeze(0) if single else metric  # (F, n, C)
    if x.dim() != 3 or m.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"expected tokens (F, n, D) and metric (F, n, C), got {tuple(tokens.shape)}, {tuple(metric.shape)}"
        )
    frames, n, dim = x.shape
    if not 1 <= count <= n:
        raise ValueError(f"count must lie in [1, {n}], got {count}")
    step = max(1, n // count)
    targets = torch.arange(0, n, step, device=x.device)[:count]  # (count,)
    is_target = torch.zeros(n, dtype=torch.bool, device=x.device)
    is_target[targets] = True
    others = (~is_target).nonzero().flatten()  # (n - count,)
    merged = x[:, targets]
    if others.numel():
        unit = F.normalize(m.float(), dim=-1)
        assign = (unit[:, others] @ unit[:, targets].transpose(1, 2)).argmax(dim=-1)  # (F, n - count)
        sums = torch.zeros(frames, count, dim, dtype=torch.float32, device=x.device)
        sums.scatter_add_(1, assign.unsqueeze(-1).expand(-1, -1, dim), x[:, others].float())
        joined = torch.zeros(frames, count, dtype=torch.float32, device=x.device)
        joined.scatter_add_(1, assign, torch.ones_like(assign, dtype=torch.float32))
        merged = (x[:, targets].float() + sums / joined.clamp(min=1).unsqueeze(-1)).to(x.dtype)
    return targets, merged[0] if single else merged


def uniform_indices(tokens: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`(k,)` evenly spaced indices in `[0, tokens)`, centred in their strides (`k == tokens` gives all)."""
    if not 1 <= k <= tokens:
        raise ValueError(f"k must lie in [1, {tokens}], got {k}")
    steps = torch.arange(k, device=device)
    return ((2 * steps + 1) * tokens) // (2 * k)
