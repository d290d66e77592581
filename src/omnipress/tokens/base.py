"""The token-pruner base: which visual tokens of each video frame enter the language model.

A pruner works on one chunk of frames at a time, `(frames, tokens, dim)` LLM-side features (after the projector
and pooling: LLaVA-OneVision's pooled grid, Qwen-VL's merged patches), and keeps per frame the tokens its scoring
prefers, in spatial (ascending) order. Two ways to use one:

- **functional**, for streaming (`omnipress.streaming`): `pruner.select(chunk)` returns the kept indices
  `(frames, k)`; stateful methods (STC's temporal memory) remember earlier chunks until `pruner.reset()`.
  `pruner.compress(chunk)` also returns the kept features (VisionZip's contextual tokens are merged ones).
- **with `generate` on an offline video**: `with pruner(model): model.generate(**inputs)` drops the pruned video
  tokens before the language model, keeping every kept token at its original position (M-RoPE included), tells a
  composed KV press where the media of the shortened prompt are (`session.prompt_spans`), and renumbers the cache
  columns to the unpruned prompt after the prefill so that decoding continues where `generate` expects it
  (`omnipress.tokens.listener`). `pruner.report` says what was kept.

Subclasses implement `_select` (or `_reduce`, to change the kept features) and, when stateful, `reset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from ..core.method import Method
from .report import PruningReport

if TYPE_CHECKING:
    from ..core.session import Listener, ModelSession


@dataclass
class Selection:
    """What `TokenPruner.compress` keeps of one chunk.

    Attributes
    ----------
    indices : Tensor
        `(frames, k)` long: kept token indices of every frame, ascending. Methods with per-frame budgets
        (VidCom2-style) pad the frames that keep fewer with -1 at the end of the row.
    features : Tensor
        `(frames, k, dim)`: the kept features (the input's rows, or merged ones for VisionZip's contextual
        tokens); zeros where `indices` is -1.
    """

    indices: torch.Tensor
    features: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """`(frames,)` tokens kept per frame."""
        return (self.indices >= 0).sum(dim=-1)

    def mask(self, tokens: int) -> torch.Tensor:
        """`(frames, tokens)` bool: the kept tokens of every frame."""
        out = torch.zeros(self.indices.shape[0], tokens + 1, dtype=torch.bool, device=self.indices.device)
        out.scatter_(1, torch.where(self.indices >= 0, self.indices, tokens), True)
        return out[:, :tokens]

    def packed(self) -> torch.Tensor:
        """`(sum(counts), dim)`: the kept features of all frames back to back (frame-major)."""
        return self.features[self.indices >= 0]


def gather_frames(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """`(F, k, D)` rows `indices` `(F, k)` of `features` `(F, P, D)`; zeros where an index is -1."""
    safe = indices.clamp(min=0).unsqueeze(-1).expand(-1, -1, features.shape[-1])
    out = features.gather(1, safe)
    return out.masked_fill((indices < 0).unsqueeze(-1), 0)


def frame_layout(tokens: int, grid: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of a frame's `tokens` are scored and which are always kept.

    `grid = (rows, cols)` describes the frame: `rows * cols` tokens in raster order (all scored), or
    `rows * (cols + 1)` with one newline token closing every row (LLaVA-Video's layout: the newlines are always
    kept and never scored, as STC and VidCom2 do). `None`: every token is scored.
    """
    every = torch.arange(tokens)
    if grid is None:
        return every, every[:0]
    rows, cols = (int(v) for v in grid)
    if rows * cols == tokens:
        return every, every[:0]
    if rows * (cols + 1) == tokens:
        newline = every % (cols + 1) == cols
        return every[~newline], every[newline]
    raise ValueError(f"grid {grid} does not match {tokens} tokens per frame (rows*cols or rows*(cols+1))")


@dataclass
class TokenPruner(Method):
    """Base of the token pruners (stage `"tokens"`); see the module docstring.

    Parameters
    ----------
    tokens_per_frame : int
        Tokens kept per frame (VidCom2-style: the mean per-frame budget). A budget at or above a frame's token count
        keeps the frame whole, and a pruner that keeps everything leaves the model bit-identical.
    images : bool
        Under `generate`, also prune every image of the prompt, each as a one-frame stream of its own keeping
        `tokens_per_frame` tokens. Only where an image is one grid of tokens: LLaVA-1.5, Qwen2-VL, Qwen2.5-VL,
        Qwen3-VL, Qwen2.5-Omni (LLaVA-OneVision's any-resolution tiles with row newlines are refused).
    """

    tokens_per_frame: int = 64
    images: bool = field(default=False, kw_only=True)

    stage: ClassVar[str] = "tokens"
    exclusive: ClassVar[bool] = True
    #: frames per `compress` call when an offline video is pruned through `generate` (None: the whole video)
    offline_chunk_frames: ClassVar[int | None] = None

    report: PruningReport | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = self.tokens_per_frame
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"tokens_per_frame must be a positive integer, got {k!r}")
        if not isinstance(self.images, bool):
            raise ValueError(f"images must be True or False, got {self.images!r}")

    # -- functional interface ------------------------------------------------------------------------------------
    def compress(
        self,
        features: torch.Tensor,
        *,
        grid: tuple[int, int] | None = None,
        saliency: torch.Tensor | None = None,
    ) -> Selection:
        """Prune one chunk of frames.

        Parameters
        ----------
        features : Tensor
            `(frames, tokens, dim)` LLM-side features of consecutive frames of one stream.
        grid : tuple of int, optional
            `(rows, cols)` of a frame's tokens; with `rows * (cols + 1)` tokens each row ends in a newline token
            that is always kept (see `frame_layout`).
        saliency : Tensor, optional
            `(frames, tokens)` importance from the vision encoder (attention received), for methods that rank by it
            (VisionZip-style); others ignore it.

        Returns
        -------
        Selection
            Kept indices `(frames, k)` (ascending per frame) and features `(frames, k, dim)`.
        """
        if features.dim() != 3:
            raise ValueError(f"features must be (frames, tokens, dim), got shape {tuple(features.shape)}")
        frames, tokens, _ = features.shape
        scored, forced = (t.to(features.device) for t in frame_layout(tokens, grid))
        x = features[:, scored]  # (F, P', D)
        if saliency is not None:
            if saliency.shape != features.shape[:2]:
                raise ValueError(f"saliency must be (frames, tokens) = {tuple(features.shape[:2])}")
            saliency = saliency[:, scored]
        k = min(self.tokens_per_frame, x.shape[1])
        if k == x.shape[1]:  # keep the frames whole (no scoring, no state change)
            local = torch.arange(k, device=features.device).expand(frames, k)
            kept = x
        else:
            local, kept = self._reduce(x, k, saliency)
        indices = torch.where(local >= 0, scored[local.clamp(min=0)], local)  # (F, k) in frame coordinates
        if forced.numel():
            indices = torch.cat([indices, forced.expand(frames, -1)], dim=1)
            kept = torch.cat([kept, features[:, forced]], dim=1)
            order = torch.where(indices >= 0, indices, tokens).argsort(dim=1)
            indices = indices.gather(1, order)
            kept = kept.gather(1, order.unsqueeze(-1).expand(-1, -1, kept.shape[-1]))
        return Selection(indices, kept)

    def select(
        self,
        features: torch.Tensor,
        *,
        grid: tuple[int, int] | None = None,
        saliency: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Kept token indices `(frames, k)` of one chunk `(frames, tokens, dim)`, ascending per frame (see
        `compress`; for VisionZip-style contextual tokens use `compress`, which also returns the merged features)."""
        return self.compress(features, grid=grid, saliency=saliency).indices

    def reset(self) -> None:
        """Forget the stream seen so far (stateless pruners have nothing to forget)."""

    # -- what subclasses implement -------------------------------------------------------------------------------
    def _select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        """`(F, k)` kept indices of `features` `(F, P, D)` with `k < P`, ascending per frame (-1 pads a frame that
        keeps fewer)."""
        raise NotImplementedError

    def _reduce(
        self, features: torch.Tensor, k: int, saliency: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept indices `(F, k)` and kept features `(F, k, D)`; the default gathers the rows `_select` picks."""
        indices = self._select(features, k)
        return indices, gather_frames(features, indices)

    # -- as a method on a model ----------------------------------------------------------------------------------
    def attach(self, session: ModelSession) -> Listener:
        from .listener import PrunerListener

        return PrunerListener(self, session)
