"""VisionZip-style pruning: dominant tokens plus a few contextual tokens merged from the rest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TokenPruner, gather_frames
from .scoring import mean_attention_received, visionzip_contextual

#: VisionZip's default split of 64 tokens: 54 dominant + 10 contextual
CONTEXTUAL_SHARE = 10 / 64


@dataclass
class VisionZipPruner(TokenPruner):
    """VisionZip-style selection and merging (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision
    Language Models", CVPR 2025, https://arxiv.org/abs/2412.04467), per frame, on the LLM-side features.

    - **Dominant tokens**: the `tokens_per_frame - contextual` tokens of highest saliency. VisionZip ranks by the
      attention the vision encoder's [CLS] token pays to each patch (CLIP), or, in towers without a [CLS] token
      (SigLIP, the Qwen ViTs), by the attention each patch receives averaged over all queries. `compress` takes
      such a score as `saliency` `(frames, tokens)` when the caller has it. Where it is not given, and always under
      `with pruner(model): generate(...)` (the encoder's attention weights are not captured there, and pooling or
      patch merging lies between them and the LLM tokens), the no-[CLS] rule is applied to the LLM-side tokens
      themselves: the mean attention received in one softmax head over the frame's tokens
      (`mean_attention_received`), an approximation of the encoder's attention.
    - **Contextual tokens**: `contextual` targets evenly spaced among the remaining tokens; every other remaining
      token joins its most similar target (cosine of the features; VisionZip uses the encoder's keys), and a
      contextual token is `target + mean(joined)`, as in the VisionZip code (`visionzip_contextual`). It takes the
      target's place (and position) in the frame. VisionZip merges before the projector; here the merge happens on
      the projected LLM-side features.

    Parameters
    ----------
    tokens_per_frame : int
        Tokens kept per frame (dominant + contextual).
    contextual : int, optional
        Contextual tokens per frame; default `round(tokens_per_frame * 10 / 64)` (VisionZip's 54 + 10 split).
    """

    tokens_per_frame: int = 64
    contextual: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contextual is not None and not 0 <= self.contextual <= self.tokens_per_frame:
            raise ValueError(f"contextual must lie in [0, tokens_per_frame], got {self.contextual}")

    def split(self, k: int) -> tuple[int, int]:
        """`(dominant, contextual)` token counts for a frame keeping `k` tokens."""
        contextual = round(k * CONTEXTUAL_SHARE) if self.contextual is None else min(self.contextual, k)
        return k - contextual, contextual

    def _reduce(
        self, features: torch.Tensor, k: int, saliency: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        frames, tokens, dim = features.shape
        dominant_count, contextual_count = self.split(k)
        if saliency is None:
            saliency = mean_attention_received(features)  # (F, P)
        dominant = torch.topk(saliency, k=dominant_count, dim=-1).indices  # (F, dominant)
        rest = torch.ones(frames, tokens, dtype=torch.bool, device=features.device)
        rest.scatter_(1, dominant, False)
        rest_index = rest.nonzero()[:, 1].view(frames, tokens - dominant_count)  # ascending per frame
        index, kept = dominant, gather_frames(features, dominant)
        if contextual_count:
            remaining = gather_frames(features, rest_index)  # (F, n, D)
            targets, merged = visionzip_contextual(remaining, remaining, contextual_count)
            index = torch.cat([index, rest_index[:, targets]], dim=1)
            kept = torch.cat([kept, merged], dim=1)
        order = index.argsort(dim=-1)  # spatial order; a contextual token sits at its target's place
        return index.gather(1, order), kept.gather(1, order.unsqueeze(-1).expand(-1, -1, dim))
