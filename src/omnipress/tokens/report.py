"""What a token pruner kept in the last prompt it pruned."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PruningReport:
    """Tokens before and after pruning, per video frame and per modality.

    Attributes
    ----------
    method : str
        The pruner's name.
    frame_tokens_before, frame_tokens_after : list of list of int
        Per batch row, the LLM tokens of every video frame (frame group for Qwen-VL, in prompt order, all videos of
        the row) before and after pruning. LLaVA-OneVision's closing newline token counts with the last frame.
    modality_tokens_before, modality_tokens_after : dict
        Prompt tokens per modality (`"text"`, `"image"`, `"video"`, ...) summed over the batch; padding is not
        counted.
    keep : Tensor or None
        `(batch, seq)` bool over the unpruned prompt: the columns that entered the language model (padding False).
    """

    method: str
    frame_tokens_before: list[list[int]] = field(default_factory=list)
    frame_tokens_after: list[list[int]] = field(default_factory=list)
    modality_tokens_before: dict[str, int] = field(default_factory=dict)
    modality_tokens_after: dict[str, int] = field(default_factory=dict)
    keep: torch.Tensor | None = field(default=None, repr=False)

    @property
    def video_tokens_before(self) -> int:
        return self.modality_tokens_before.get("video", 0)

    @property
    def video_tokens_after(self) -> int:
        return self.modality_tokens_after.get("video", 0)

    @property
    def pruned(self) -> bool:
        """Whether any token was dropped."""
        return self.video_tokens_after < self.video_tokens_before

    @property
    def removed_ratio(self) -> float:
        """Fraction of the video tokens removed (0 when the prompt has none)."""
        before = self.video_tokens_before
        return 0.0 if before == 0 else 1.0 - self.video_tokens_after / before

    def summary(self) -> str:
        frames = sum(len(row) for row in self.frame_tokens_before)
        text = ", ".join(
            f"{name} {self.modality_tokens_before[name]}->{self.modality_tokens_after.get(name, 0)}"
            for name in self.modality_tokens_before
        )
        return (
            f"{self.method}: {frames} video frames, {self.video_tokens_before} -> {self.video_tokens_after} video "
            f"tokens ({self.removed_ratio:.1%} removed); prompt tokens {text}"
        )

    def __str__(self) -> str:
        return self.summary()
