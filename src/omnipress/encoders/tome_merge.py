"""Token Merging's bipartite soft matching and size-weighted merge (pure functions).

ToMe, "Token Merging: Your ViT But Faster" (Bolya et al., arXiv 2210.09461, https://arxiv.org/abs/2210.09461), §3:
split the tokens alternately into sets A and B, connect each A token to its most similar B token (cosine of the
metric, the attention keys averaged over heads), keep the `r` strongest edges and merge those A tokens into their
B partners by a size-weighted average. The merged sequence is the unmerged A tokens, then all B tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Matching:
    """The result of `bipartite_soft_matching` for a batch: which A tokens stay, which merge into which B token."""

    kept: torch.Tensor  # (batch, A tokens - r) indices into A of the unmerged tokens
    merged: torch.Tensor  # (batch, r) indices into A of the merged tokens
    into: torch.Tensor  # (batch, r) indices into B of their partners

    def merge(self, x: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """`(batch, tokens, dim)` -> `(batch, tokens - r, dim)`: unmerged A rows, then B rows with the merged A rows
        reduced into them (`"sum"` or `"mean"`)."""
        a, b = x[:, ::2], x[:, 1::2]  # (batch, A, dim), (batch, B, dim)
        dim = x.shape[-1]
        kept = a.gather(1, self.kept[..., None].expand(-1, -1, dim))
        moved = a.gather(1, self.merged[..., None].expand(-1, -1, dim))
        b = b.scatter_reduce(1, self.into[..., None].expand(-1, -1, dim), moved, reduce=reduce)
        return torch.cat([kept, b], dim=1)

    def destination(self, tokens: int) -> torch.Tensor:
        """`(batch, tokens)`: the position in the merged sequence of each input token (`merge`'s layout)."""
        batch, kept = self.kept.shape
        device = self.kept.device
        a = torch.empty(batch, (tokens + 1) // 2, dtype=torch.long, device=device)
        a.scatter_(1, self.kept, torch.arange(kept, device=device).expand(batch, -1))
        a.scatter_(1, self.merged, kept + self.into)
        out = torch.empty(batch, tokens, dtype=torch.long, device=device)
        out[:, 0::2] = a
        out[:, 1::2] = kept + torch.arange(tokens // 2, device=device)
        return out


def bipartite_soft_matching(metric: torch.Tensor, r: int, protect_first: bool = False) -> Matching:
    """Choose the `r` merges of one ToMe step.

    Parameters
    ----------
    metric:
        `(batch, tokens, dim)` per-token similarity features (ToMe: the keys averaged over heads).
    r:
        Tokens removed, at most `tokens // 2` (and one less with `protect_first`).
    protect_first:
        Never merge token 0 (a class token); it then stays first.

    Returns
    -------
    Matching
        Apply with `Matching.merge` or `merge_weighted`.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(1, 2)  # (batch, A, B) cosine similarities
    if protect_first:
        scores[:, 0, :] = -torch.inf
    best, partner = scores.max(dim=-1)  # (batch, A): each A token's most similar B token
    order = best.argsort(dim=-1, descending=True)  # strongest edges first
    kept, merged = order[:, r:], order[:, :r]
    if protect_first:  # keep the class token in front
        kept = kept.sort(dim=-1).values
    return Matching(kept, merged, partner.gather(1, merged))


def merge_weighted(matching: Matching, x: torch.Tensor, size: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge `x` `(batch, tokens, dim)` as size-weighted averages; `size` `(batch, tokens, 1)` counts the input
    patches in each token (None: all ones). Returns the merged `x` and sizes."""
    if size is None:
        size = x.new_ones(x.shape[0], x.shape[1], 1)
    x = matching.merge(x * size, "sum")
    size = matching.merge(size, "sum")
    return x / size, size
