"""STC-Pruner: keep the tokens least redundant with the frame and with the stream seen so far.

Two ways to run it on a stream:

- the method object: `pruner.compress(chunk)` per chunk (the temporal memory lives on the pruner until `reset()`;
  `pruner.memory` reads or restores it);
- the pure function `stc_prune(chunk, k, memory) -> (indices, memory)`: no state anywhere but the `STCMemory` value
  passed in and returned, so a streaming session can keep one memory per stream, snapshot it or roll it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import TokenPruner
from .scoring import keep_topk, low_variance_channels, stc_scores

STRATEGIES = ("gaussian", "dual_anchor")


@dataclass(frozen=True)
class STCMemory:
    """The temporal memory of one stream: the running sum and count of the per-chunk means.

    The official code keeps a list of chunk means and averages it; a float64 sum and a count give the same anchor
    (up to rounding) in constant memory.

    Attributes
    ----------
    total : Tensor
        `(C,)` float64 sum of the chunk means, each on its own chunk's scoring channels (spec §1.6.5).
    count : int
        Chunks seen.
    """

    total: torch.Tensor
    count: int

    @property
    def mean(self) -> torch.Tensor:
        """`(C,)` the temporal anchor before normalisation (float64)."""
        return self.total / self.count

    def add(self, chunk_mean: torch.Tensor) -> STCMemory:
        """A new memory with one more chunk mean `(C,)`."""
        mean = chunk_mean.detach().double()
        if self.total.shape != mean.shape:
            raise ValueError(
                f"this chunk scores {mean.shape[0]} channels but the temporal memory holds {self.total.shape[0]}: "
                "start a new memory (reset()) for a stream of another feature width"
            )
        return STCMemory(self.total.to(mean.device) + mean, self.count + 1)


def stc_prune(
    features: torch.Tensor,
    tokens_per_frame: int,
    memory: STCMemory | None = None,
    *,
    strategy: str = "gaussian",
    channel_keep_ratio: float = 0.5,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, STCMemory | None]:
    """Prune one chunk of a stream given the stream's temporal memory (pure: nothing is stored anywhere).

    Spec stc_mixkv.md §1.2.2, as the official code computes it:

    1. scoring channels: the `floor(channel_keep_ratio * D)` channels of lowest population variance over all the
       chunk's tokens (scoring only; the caller gathers the kept tokens from the full-width features);
    2. the chunk's mean on those channels joins the memory; the temporal anchor is the memory's mean (current chunk
       included);
    3. scores of the L2-normalised tokens against the frame's mean (spatial anchor) and the normalised temporal
       anchor (`stc_scores`): `"gaussian"` keeps the `k` lowest, `"dual_anchor"` the `k` highest;
    4. kept indices ascending per frame (spatial order).

    Parameters
    ----------
    features : Tensor
        `(F, P, D)` LLM-side features of the chunk's frames (scored in float32).
    tokens_per_frame : int
        `k`; at or above `P` every frame is kept whole and the memory is returned unchanged (no scoring).
    memory : STCMemory, optional
        The stream's memory after the previous chunk; None for the first chunk of a stream.
    strategy, channel_keep_ratio, alpha
        See `STCPruner`.

    Returns
    -------
    tuple
        `(F, k)` long kept indices, ascending per frame, and the memory to pass with the next chunk.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be (frames, tokens, dim), got shape {tuple(features.shape)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    frames, tokens, dim = features.shape
    k = min(int(tokens_per_frame), tokens)
    if k < 1:
        raise ValueError(f"tokens_per_frame must be >= 1, got {tokens_per_frame}")
    if k == tokens:
        return torch.arange(tokens, device=features.device).expand(frames, tokens), memory
    flat = features.reshape(frames * tokens, dim).float()
    channels = low_variance_channels(flat, channel_keep_ratio)  # (C,)
    chunk = flat[:, channels].view(frames, tokens, -1)  # (F, P, C)
    chunk_mean = chunk.mean(dim=(0, 1))  # (C,)
    memory = STCMemory(chunk_mean.detach().double(), 1) if memory is None else memory.add(chunk_mean)
    scores = stc_scores(chunk, memory.mean.to(chunk), strategy=strategy, alpha=alpha)  # (F, P)
    return keep_topk(scores, k, largest=strategy == "dual_anchor"), memory


@dataclass
class STCPruner(TokenPruner):
    """STC-Pruner (Wang et al., "Accelerating Streaming Video Large Language Models via Hierarchical Token
    Compression", https://arxiv.org/abs/2512.00891), as the official code behaves (spec stc_mixkv.md §1.2.2; the
    math is `stc_prune`).

    Per chunk `(F, P, D)`: scoring channels of lowest variance, a temporal anchor (running mean of the chunk means,
    this chunk included; like the official code it mixes means taken on different channel subsets, spec §1.6.5), a
    spatial anchor (the frame's mean normalised token), `"gaussian"` (released default: keep the `k` tokens least
    similar to both anchors under a multi-bandwidth Gaussian kernel) or `"dual_anchor"` (keep the `k` of highest
    `alpha (1 - cos(x, temporal)) + (1 - alpha) (1 - cos(x, spatial))`), kept indices ascending.

    The temporal memory is stream state: it lives on the pruner until `reset()` (call it between videos; the
    original ReKV code never did, spec §1.6.6). A streaming session feeds chunks with `compress` / `select`, or keeps
    its own `STCMemory` and calls `stc_prune`. Under `with pruner(model): model.generate(...)` every video of the
    prompt is its own stream: the memory is reset before it and its frames are fed `chunk_frames` at a time, as the
    official streaming loop does (ReKV, `encode_chunk_size = 1`).

    Differences from the official code: scoring runs in float32 (the official code scores in the model's dtype);
    with a `(rows, cols + 1)` grid the row-newline tokens are kept in their raster places (the official LLaVA-Video
    mapping appends them after each frame's kept tokens).

    Parameters
    ----------
    tokens_per_frame : int
        `k`, tokens kept per frame (the paper keeps 64 of LLaVA-OneVision's 196).
    strategy : str
        `"gaussian"` or `"dual_anchor"`.
    channel_keep_ratio : float
        Fraction of low-variance channels used for scoring, in (0, 1].
    alpha : float
        Temporal weight of `"dual_anchor"` (`spatial_temporal_alpha`), in [0, 1].
    chunk_frames : int
        Frames per chunk when pruning an offline video through `generate`.
    """

    tokens_per_frame: int = 64
    strategy: str = "gaussian"
    channel_keep_ratio: float = 0.5
    alpha: float = 0.5
    chunk_frames: int = 1

    memory: STCMemory | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if not 0.0 < self.channel_keep_ratio <= 1.0:
            raise ValueError(f"channel_keep_ratio must lie in (0, 1], got {self.channel_keep_ratio}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if isinstance(self.chunk_frames, bool) or not isinstance(self.chunk_frames, int) or self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive integer, got {self.chunk_frames!r}")

    @property
    def offline_chunk_frames(self) -> int:  # type: ignore[override]
        return self.chunk_frames

    @property
    def memory_chunks(self) -> int:
        """Chunks in the temporal memory (0 after `reset()`)."""
        return 0 if self.memory is None else self.memory.count

    @property
    def temporal_mean(self) -> torch.Tensor | None:
        """`(C,)` the current temporal anchor before normalisation (float64), or None before the first chunk."""
        return None if self.memory is None else self.memory.mean

    def reset(self) -> None:
        self.memory = None

    def _select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        indices, self.memory = stc_prune(
            features,
            k,
            self.memory,
            strategy=self.strategy,
            channel_keep_ratio=self.channel_keep_ratio,
            alpha=self.alpha,
        )
        return indices
