"""Random pruning: a seeded random subset of every frame's tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import TokenPruner


@dataclass
class RandomPruner(TokenPruner):
    """Keep `tokens_per_frame` tokens of every frame drawn uniformly at random (ascending), from a generator seeded
    with `seed`. `reset()` reseeds it, so a stream pruned after `reset()` gets the same draws again (under
    `generate` every video is reset first: identical rows, such as beams, keep identical tokens).

    Parameters
    ----------
    tokens_per_frame : int
        Tokens kept per frame.
    seed : int
        Seed of the pruner's own generator (the global torch generator is not touched).
    """

    tokens_per_frame: int = 64
    seed: int = 0

    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reset()

    def reset(self) -> None:
        self._generator = torch.Generator().manual_seed(int(self.seed))

    def _select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        frames, tokens, _ = features.shape
        draws = torch.stack([torch.randperm(tokens, generator=self._generator)[:k] for _ in range(frames)])
        return draws.sort(dim=-1).values.to(features.device)
