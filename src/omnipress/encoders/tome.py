"""ToMe-style token merging inside a ViT, the encoder-side baseline of STC.

ToMe, "Token Merging: Your ViT But Faster" (Bolya et al., arXiv 2210.09461, https://arxiv.org/abs/2210.09461). The
STC paper (arXiv 2512.00891) reports it as the only baseline that also cuts ViT latency (spec §1.8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.method import Method
from ..core.session import Listener
from .tome_merge import bipartite_soft_matching, merge_weighted
from .vit_attention import ViTAttention

if TYPE_CHECKING:
    from ..core.session import ModelSession


@dataclass
class ToMeStats:
    """The last encoder call under ToMe: tokens per frame entering each layer and leaving the encoder."""

    tokens_in: int = 0
    tokens_out: int = 0
    per_layer: list[int] = field(default_factory=list)  # tokens entering each layer
    sizes: torch.Tensor | None = None  # (frames, tokens_out) input patches merged into each output token
    source: torch.Tensor | None = None  # (frames, tokens_in) the output token each input patch ended in

    def unmerge(self, merged: torch.Tensor) -> torch.Tensor:
        """`(frames, tokens_out, dim)` merged features -> `(frames, tokens_in, dim)`: each input patch gets the
        features of the token it was merged into (None `source`: nothing was merged, `merged` is returned)."""
        if self.source is None:
            return merged
        return merged.gather(1, self.source[..., None].expand(-1, -1, merged.shape[-1]))

    @property
    def reduction(self) -> float:
        """Fraction of the tokens removed."""
        return 1.0 - self.tokens_out / max(1, self.tokens_in)


@dataclass(eq=False)
class ToMe(Method):
    """ToMe (arXiv 2210.09461): merge the `r` most similar tokens in every ViT block by bipartite soft matching.

    In each block, after attention: tokens alternate into sets A and B; each A token is paired with its most similar
    B token (cosine of the keys averaged over heads); the `r` best pairs are merged by a size-weighted average, and
    later attention is proportional (`+ log(size)` on the logits), as ToMe does. A CLIP class token is never merged.
    The tower's output has `T - sum(r)` tokens per frame.

    Supported: bare SigLIP and CLIP towers (`SiglipVisionModel`, `CLIPVisionModel`)::

        with op.ToMe(r=16)(model.model.vision_tower) as tome:
            features = model.model.vision_tower(pixel_values).last_hidden_state   # (frames, T - 16 * layers, C)
        tome.stats.tokens_out

    Not supported, with a clear error at entry:

    - a whole VLM (LLaVA, LLaVA-OneVision, Qwen-VL): `generate` fixes the number of image placeholder tokens in the
      prompt before the encoder runs, and the models check that the features fill exactly those placeholders; fewer
      tokens cannot go through plain `generate`. Feed the merged tower outputs to the LLM yourself (`inputs_embeds`)
      to measure both encoder and LLM savings;
    - the Qwen-VL vision towers: their patch merger groups 2x2 neighbouring patches and Qwen2.5-VL undoes a window
      permutation of the full token count after the blocks, both of which need every patch;
    - `output_hidden_states` while merging (the per-layer token counts differ); with nothing to merge the blocks run
      unchanged.

    Parameters
    ----------
    r : int, optional
        Tokens merged per block (ToMe's constant schedule), capped at half of the mergeable tokens.
    merge_ratio : float, optional
        Instead of `r`: the fraction in [0, 1) of a frame's tokens removed over the whole encoder, spread evenly over
        the blocks. Give exactly one of `r` and `merge_ratio`; `r=0` (or `merge_ratio=0`) is the untouched tower.
    """

    r: int | None = None
    merge_ratio: float | None = None

    stage: ClassVar[str] = "encoder"

    stats: ToMeStats = field(default_factory=ToMeStats, init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.r is None) == (self.merge_ratio is None):
            raise ValueError(f"give exactly one of r and merge_ratio; got r={self.r}, merge_ratio={self.merge_ratio}")
        if self.r is not None and (int(self.r) != self.r or self.r < 0):
            raise ValueError(f"r must be an integer >= 0, got {self.r}")
        if self.merge_ratio is not None and not 0.0 <= self.merge_ratio < 1.0:
            raise ValueError(f"merge_ratio must be in [0, 1), got {self.merge_ratio}")

    def schedule(self, tokens: int, layers: int, protected: int = 0) -> list[int]:
        """Tokens to merge in each of `layers` blocks for frames of `tokens` tokens (each capped at half of the
        mergeable tokens entering the block)."""
        if self.r is not None:
            wanted = [int(self.r)] * layers
        else:
            total = round(tokens * float(self.merge_ratio))
            wanted = [total // layers + (1 if i < total % layers else 0) for i in range(layers)]
        out = []
        for r in wanted:
            r = min(r, (tokens - protected) // 2)
            out.append(r)
            tokens -= r
        return out

    def attach(self, session: ModelSession) -> Listener:
        adapter = session.adapter
        tower = adapter.vision_encoder  # a clear error for models without one
        if getattr(adapter, "has_language_model", True):
            raise ValueError(
                f"ToMe merges vision tokens, so {type(session.model).__name__} would produce fewer image features than "
                "the prompt has placeholder tokens (fixed before the encoder runs): it cannot run under generate. "
                "Apply ToMe to the bare vision tower instead, e.g. `op.ToMe(r=8)(model.model.vision_tower)`, and feed "
                "its outputs to the language model as inputs_embeds"
            )
        blocks = adapter.vision_blocks
        if not hasattr(blocks[0], "self_attn"):
            raise NotImplementedError(
                f"ToMe is not supported on {type(adapter.vision_encoder).__name__}: the Qwen-VL patch merger needs "
                "every 2x2 patch group (and Qwen2.5-VL un-permutes windows of the full token count); use a SigLIP or "
                "CLIP tower"
            )
        protected = 1 if getattr(tower.config, "model_type", "") == "clip_vision_model" else 0
        run = _Run(self, len(blocks), protected)
        for layer, block in enumerate(blocks):
            session.replace_submodule(blocks, str(layer), ToMeBlock(block, layer, run))
        session.hook_forward_pre(tower, run.before, with_kwargs=True)
        session.hook_forward(tower, run.after, with_kwargs=True)
        return Listener()


class _Run:
    """Per-call state of a ToMe tower: merge schedule and token sizes, shared by its blocks."""

    def __init__(self, method: ToMe, layers: int, protected: int) -> None:
        self.method, self.layers, self.protected = method, layers, protected
        self.size: torch.Tensor | None = None  # (frames, tokens, 1)
        self.source: torch.Tensor | None = None  # (frames, input tokens) current token of each input token
        self.schedule: list[int] | None = None
        self.per_layer: list[int] = []

    def before(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.size, self.source, self.schedule, self.per_layer = None, None, None, []
        wants_hidden = kwargs.get("output_hidden_states")
        if wants_hidden is None:
            wants_hidden = getattr(module.config, "output_hidden_states", False)
        merges = (self.method.r or 0) > 0 or (self.method.merge_ratio or 0.0) > 0
        if wants_hidden and merges:
            raise ValueError("ToMe cannot return output_hidden_states: the blocks' token counts differ")

    def after(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        tokens = self.per_layer[0] if self.per_layer else 0
        out = self.per_layer[-1] - (self.schedule[-1] if self.schedule else 0) if self.per_layer else 0
        sizes = self.size[..., 0] if self.size is not None else None
        self.method.stats = ToMeStats(tokens, out, list(self.per_layer), sizes, self.source)
        self.size, self.source, self.schedule = None, None, None

    def plan(self, tokens: int) -> list[int]:
        if self.schedule is None:
            self.schedule = self.method.schedule(tokens, self.layers, self.protected)
        return self.schedule


class ToMeBlock(nn.Module):
    """One pre-LN encoder layer with ToMe: proportional attention, merge, MLP (holds and uses the original layer).

    With no merge so far and none in this block it runs the original layer unchanged (so `r=0` is bit-identical).
    """

    def __init__(self, layer: nn.Module, index: int, run: _Run) -> None:
        super().__init__()
        self.layer, self.index, self.run = layer, index, run
        self.ops = ViTAttention(layer.self_attn)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        run = self.run
        r = run.plan(hidden_states.shape[1])[self.index]
        run.per_layer.append(int(hidden_states.shape[1]))
        if run.size is None and r == 0:
            return self.layer(hidden_states, attention_mask, **kwargs)
        if attention_mask is not None:
            raise ValueError("ToMe does not support an attention mask inside the vision encoder")
        layer, ops = self.layer, self.ops
        h = layer.layer_norm1(hidden_states)
        q, k, v = (ops.heads(t).transpose(1, 2) for t in (ops.queries(h), ops.keys(h), ops.values(h)))
        bias = None if run.size is None else run.size.log()[:, None, None, :, 0].to(q.dtype)  # (frames, 1, 1, T)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=ops.scale)  # (frames, heads, T, head_dim)
        x = hidden_states + ops.output(a.transpose(1, 2).flatten(-2))
        if r > 0:
            matching = bipartite_soft_matching(k.mean(dim=1), r, protect_first=run.protected > 0)
            destination = matching.destination(x.shape[1])  # (frames, tokens)
            run.source = destination if run.source is None else destination.gather(1, run.source)
            x, run.size = merge_weighted(matching, x, run.size)
        return x + layer.mlp(layer.layer_norm2(x))
