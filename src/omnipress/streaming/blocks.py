"""Frame blocks of a stream: their bookkeeping, their offloaded copies, and retrieval (ReKV-style).

Every group of frames appended together as one LLM-side frame group (one frame; one temporal patch for Qwen-VL) is a
*block*: a range `[start, end)` of cache columns. Memory policies act on whole blocks. The retrieval memory copies a
block's entries (every layer, every KV head, compressed or not) to host memory before evicting it, with one mean key
per (layer, KV head); at question time each layer scores the offloaded blocks with the question's queries and brings
the best ones back into the answering cache (`merge`).

Retrieval rule (ReKV, Di et al. 2025, https://arxiv.org/abs/2503.00540, `ContextManager._calc_block_topk`): per
layer, the question tokens' queries are averaged, and a block's score is their dot product with the block's mean key,
summed over heads, i.e. the mean attention logit the question would give the block's mean key. The `retrieve` best
blocks of that layer come back. Differences from ReKV: keys are post-RoPE (stored at their own positions, as the
cache holds them; ReKV stores pre-RoPE keys and re-rotates them), so the score is exactly the average attention logit
between the question and the block; a query head reads the mean key of its own KV head (grouped-query attention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..cache.ragged import RaggedLayer


@dataclass
class FrameBlock:
    """One block of the stream.

    Attributes
    ----------
    index:
        Order of the block in the stream (0 = first).
    start, end:
        Its cache columns `[start, end)` in the unpruned sequence.
    times:
        Timestamps (seconds) of its frames.
    where:
        `"live"` (in the live cache), `"evicted"` (dropped by the window memory) or `"offloaded"` (host memory).
    """

    index: int
    start: int
    end: int
    times: list[float]
    where: str = "live"


@dataclass
class Entries:
    """Some entries of one layer, per `(row, KV head)` segment, stored back to back."""

    keys: torch.Tensor  # (total, dim)
    values: torch.Tensor  # (total, dim_v)
    columns: torch.Tensor  # (total,) int32
    lengths: list[int]  # entries per segment

    def segment(self, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        start = sum(self.lengths[:s])
        part = slice(start, start + self.lengths[s])
        return self.keys[part], self.values[part], self.columns[part]

    def to(self, device: torch.device) -> Entries:
        move = {"device": device, "non_blocking": True}
        return Entries(self.keys.to(**move), self.values.to(**move), self.columns.to(**move), self.lengths)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.columns))


def extract(layer: RaggedLayer, start: int, end: int) -> Entries:
    """Copies of the entries of `layer` whose cache column lies in `[start, end)`, per segment."""
    keys, values = layer.segments()
    parts_k, parts_v, parts_c, lengths = [], [], [], []
    for k, v, c in zip(keys, values, layer.head_positions()):
        inside = (c >= start) & (c < end)
        parts_k.append(k[inside])
        parts_v.append(v[inside])
        parts_c.append(c[inside])
        lengths.append(int(inside.sum()))
    return Entries(torch.cat(parts_k), torch.cat(parts_v), torch.cat(parts_c), lengths)


def merge(layer: RaggedLayer, extra: list[Entries], *, tail: int, reserve: int = 0) -> RaggedLayer:
    """A new layer holding `layer`'s entries plus `extra`, each segment in column order, except that the last
    `tail` entries of `layer` (the tokens being attended now) stay last. `layer` is not changed."""
    keys, values = layer.segments()
    out_k, out_v, out_c, lengths = [], [], [], []
    for s, (k, v, c) in enumerate(zip(keys, values, layer.head_positions())):
        body = k.shape[0] - tail
        ks = [k[:body], *(e.segment(s)[0] for e in extra)]
        vs = [v[:body], *(e.segment(s)[1] for e in extra)]
        cs = [c[:body], *(e.segment(s)[2] for e in extra)]
        order = torch.argsort(torch.cat(cs).long(), stable=True)
        out_k += [torch.cat(ks)[order], k[body:]]
        out_v += [torch.cat(vs)[order], v[body:]]
        out_c += [torch.cat(cs)[order], c[body:]]
        lengths.append(int(order.shape[0]) + tail)
    return RaggedLayer.from_packed(
        torch.cat(out_k),
        torch.cat(out_v),
        lengths,
        torch.cat(out_c),
        batch_size=layer.batch_size,
        num_heads=layer.num_heads,
        logical_length=layer.logical_length,
        reserve=reserve,
    )


@dataclass
class BlockStore:
    """Offloaded blocks, per layer, on `device` (host memory; pinned when the model runs on CUDA)."""

    num_layers: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pin: bool = False
    blocks: list[FrameBlock] = field(default_factory=list)
    entries: list[list[Entries]] = field(default_factory=list)
    means: list[list[torch.Tensor]] = field(default_factory=list)
    _stacked: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.entries = [[] for _ in range(self.num_layers)]
        self.means = [[] for _ in range(self.num_layers)]

    def __len__(self) -> int:
        return len(self.blocks)

    def add(self, block: FrameBlock, layers: list[RaggedLayer]) -> None:
        """Copy `block`'s entries of every layer here (the caller then evicts them from the live cache)."""
        for idx, layer in enumerate(layers):
            found = extract(layer, block.start, block.end)
            stored = Entries(*(self._store(t) for t in (found.keys, found.values, found.columns)), found.lengths)
            self.entries[idx].append(stored)
            heads = []
            for s in range(len(found.lengths)):
                k = found.segment(s)[0]
                heads.append(k.float().mean(0) if k.shape[0] else k.new_zeros(k.shape[-1], dtype=torch.float32))
            self.means[idx].append(torch.stack(heads).to(self.device))  # (kv_heads, dim)
        self.blocks.append(block)
        block.where = "offloaded"
        self._stacked.clear()

    def _store(self, t: torch.Tensor) -> torch.Tensor:
        out = t.to(self.device, copy=True)
        return out.pin_memory() if self.pin else out

    def scores(self, layer_idx: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """`(blocks,)` mean attention logit of the question's queries `(q_heads, n, dim)` (post-RoPE) to each
        offloaded block's mean key at this layer (module docstring)."""
        means = self._stacked.get(layer_idx)
        if means is None:
            means = self._stacked[layer_idx] = torch.stack(self.means[layer_idx])  # (blocks, kv_heads, dim)
        kv_heads = means.shape[1]
        q = query.float().mean(1).to(means.device)  # (q_heads, dim)
        q = q.view(kv_heads, -1, q.shape[-1]).mean(1)  # (kv_heads, dim): each query head reads its own KV head
        return scaling * torch.einsum("hd,bhd->b", q, means) / kv_heads

    def select(self, layer_idx: int, query: torch.Tensor, scaling: float, count: int) -> list[int]:
        """Indices (into `blocks`, ascending) of the `count` best blocks for this layer."""
        if count >= len(self.blocks):
            return list(range(len(self.blocks)))
        top = torch.topk(self.scores(layer_idx, query, scaling), count).indices
        return sorted(int(i) for i in top)

    def fetch(self, layer_idx: int, chosen: list[int], device: torch.device) -> list[Entries]:
        return [self.entries[layer_idx][i].to(device) for i in chosen]

    @property
    def nbytes(self) -> int:
        """Host bytes of the offloaded keys, values and columns."""
        return sum(e.nbytes for layer in self.entries for e in layer)
