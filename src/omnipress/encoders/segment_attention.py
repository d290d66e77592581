"""Attention of a subset of a frame's queries over the frame's keys, inside attention segments (pure function).

A frame is one attention sequence for SigLIP/CLIP and Qwen2-VL/Qwen3-VL; Qwen2.5-VL's windowed blocks cut it into
windows (segments), and a query attends only to the keys of its own window. The queries here are the dynamic tokens
of STC-Cacher (or all tokens of a reference frame): they are grouped by segment and padded per segment, so the work
is `segments x max queries per segment x max segment length`, never more than the dense windowed attention.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def segment_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rows: torch.Tensor | None,
    bounds: list[int],
    scale: float,
) -> torch.Tensor:
    """Non-causal softmax attention of `query` over the keys of its own segment.

    Parameters
    ----------
    query:
        `(frames, queries, heads, head_dim)`: the queries of tokens `rows` of each frame.
    key, value:
        `(frames, tokens, heads, head_dim)`: every token of each frame.
    rows:
        `(frames, queries)` ascending token indices of the queries, or None when the queries are all tokens in order.
    bounds:
        Segment boundaries inside a frame, `[0, ..., tokens]` (the same for every frame); `[0, tokens]` is one segment.
    scale:
        Logit scale (`head_dim ** -0.5` for these models).

    Returns
    -------
    torch.Tensor
        `(frames, queries, heads, head_dim)`.
    """
    frames, num_queries, heads, dim = query.shape
    tokens = key.shape[1]
    if len(bounds) == 2:  # one segment: plain attention over the frame
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
        )  # (frames, heads, queries, head_dim)
        return out.transpose(1, 2)
    segments = len(bounds) - 1
    if rows is None and tokens % segments == 0 and bounds == list(range(0, tokens + 1, tokens // segments)):
        # every token of equal windows (Qwen2.5-VL's windows of a frame whose grid fills them): no padding, no mask
        size = tokens // segments
        out = F.scaled_dot_product_attention(
            *(t.reshape(frames * segments, size, heads, dim).transpose(1, 2) for t in (query, key, value)), scale=scale
        )  # (frames * segments, heads, size, head_dim)
        return out.transpose(1, 2).reshape(frames, tokens, heads, dim)
    device = query.device
    edges = torch.tensor(bounds, device=device)
    lengths = edges[1:] - edges[:-1]  # (segments,)
    kmax = max(b - a for a, b in itertools.pairwise(bounds))
    offsets = torch.arange(kmax, device=device)
    key_index = (edges[:-1, None] + offsets).clamp(max=tokens - 1)  # (segments, kmax)
    key_valid = offsets < lengths[:, None]  # (segments, kmax)

    if rows is None:
        rows = torch.arange(tokens, device=device).expand(frames, tokens)
    seg = torch.bucketize(rows.contiguous(), edges[1:-1], right=True)  # (frames, queries): segment of each query
    counts = torch.zeros(frames, segments, dtype=torch.long, device=device)
    counts.scatter_add_(1, seg, torch.ones_like(seg))
    first = counts.cumsum(1) - counts  # (frames, segments): first query slot of each segment
    slot = torch.arange(num_queries, device=device) - first.gather(1, seg)  # (frames, queries): place in segment
    qmax = int(counts.max()) if num_queries else 0
    if qmax == 0:
        return query.new_zeros(query.shape)
    frame_of = torch.arange(frames, device=device)[:, None].expand_as(seg)

    padded = query.new_zeros(frames, segments, qmax, heads, dim)
    padded[frame_of, seg, slot] = query
    keys = key[:, key_index]  # (frames, segments, kmax, heads, head_dim)
    values = value[:, key_index]
    out = F.scaled_dot_product_attention(
        padded.flatten(0, 1).transpose(1, 2),  # (frames*segments, heads, qmax, head_dim)
        keys.flatten(0, 1).transpose(1, 2),  # (frames*segments, heads, kmax, head_dim)
        values.flatten(0, 1).transpose(1, 2),
        attn_mask=key_valid[None, :, None, None, :].expand(frames, -1, 1, 1, -1).flatten(0, 1),
        scale=scale,
    )  # (frames*segments, heads, qmax, head_dim)
    out = out.transpose(1, 2).unflatten(0, (frames, segments))  # (frames, segments, qmax, heads, head_dim)
    return out[frame_of, seg, slot]
