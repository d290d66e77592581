"""VidCom2-style pruning: per-frame budgets from frame uniqueness, then the most distinctive tokens of each frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TokenPruner
from .scoring import low_variance_channels, vidcom2_budgets, vidcom2_scores


@dataclass
class VidCom2Pruner(TokenPruner):
    """VidCom2-style video token compression (Liu et al., "Video Compression Commander", EMNLP 2025,
    https://arxiv.org/abs/2505.14454), as its released code allocates and selects.

    On the low-variance half of the channels (scoring only), every token is compared with the video's mean token
    and its frame's mean token (multi-scale Gaussian similarity of the L2-normalised tokens). Frame uniqueness is
    minus the frame's mean similarity to the video centre; a softmax of it (temperature 0.01) moves budget from
    frames like the rest of the video to unique ones (`vidcom2_budgets`), around a mean of `tokens_per_frame`.
    Each frame keeps the tokens least similar to both centres (its outliers), ascending.

    Budgets differ per frame, so `select` pads the rows of frames keeping fewer tokens with -1 (`Selection`).
    The whole offline video is one chunk (the budgets are relative to the video); a frame budget at or above the
    frame's tokens keeps every frame whole (VidCom2's own rounding would still trim some frames).

    Parameters
    ----------
    tokens_per_frame : int
        Mean tokens kept per frame (VidCom2's retention ratio times the tokens per frame).
    channel_keep_ratio : float
        Fraction of low-variance channels used for scoring.
    temperature : float
        Softmax temperature of the frame-uniqueness budgets.
    """

    tokens_per_frame: int = 64
    channel_keep_ratio: float = 0.5
    temperature: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.channel_keep_ratio <= 1.0:
            raise ValueError(f"channel_keep_ratio must lie in (0, 1], got {self.channel_keep_ratio}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def frame_budgets(self, features: torch.Tensor) -> torch.Tensor:
        """`(F,)` tokens each frame of `features` `(F, P, D)` keeps."""
        return self._scores(features)[1]

    def _scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, tokens, dim = features.shape
        flat = features.reshape(frames * tokens, dim).float()
        chunk = flat[:, low_variance_channels(flat, self.channel_keep_ratio)].view(frames, tokens, -1)
        video_sim, frame_sim = vidcom2_scores(chunk)  # (F, P) each
        base = min(1.0, self.tokens_per_frame / tokens)
        budgets = vidcom2_budgets(-video_sim.mean(dim=-1), base, tokens, self.temperature)  # (F,)
        return video_sim + frame_sim, budgets

    def _select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        scores, budgets = self._scores(features)
        width = int(budgets.max())
        out = torch.full((features.shape[0], width), -1, dtype=torch.long, device=features.device)
        for f, budget in enumerate(budgets.tolist()):
            kept = torch.topk(scores[f], k=budget, largest=False).indices.sort().values
            out[f, :budget] = kept
        return out
