"""A per-(row, KV head) ragged KV cache layer built for decoding.

After head-wise eviction (AdaKV, PyramidKV, SparseMM, MixKV on those hosts) every `(row, KV head)` pair of a layer
keeps its own number of entries. kvpress keeps full-size tensors and masks the evicted keys, so nothing is freed.
Here each pair is one *segment* of a flat buffer, and a segment has a little spare capacity so that decoding writes
new tokens in place::

    keys:      (capacity, head_dim)        segment 0 = (row 0, head 0), segment 1 = (row 0, head 1), ...
    values:    (capacity, head_dim_v)
    positions: (capacity,) int32           cache column (original position) of every stored entry
    lengths:   (segments,) int32           entries used per segment, on the device
    starts:    (segments + 1,) int32       first slot of every segment (cu_seqlens layout), on the device

Segment `s` holds its entries in slots `starts[s] .. starts[s] + lengths[s] - 1`; the slots after them up to
`starts[s + 1]` are spare (zero-filled, never attended). Layout facts that do not change while decoding (the
capacities, a bound on the longest segment, the spare room left) are kept on the host, so **a decode step never
reads a device value on the host**: appending `q` tokens writes them at `starts + lengths` and adds `q` to the
lengths, and when the spare room runs out every segment grows geometrically (`growth`), which amortises the copy.

Two layouts:

- *uniform* (every segment has the same length and capacity, e.g. SnapKV): the buffers are exactly a
  `(batch, kv_heads, capacity, dim)` tensor and `dense()` returns a `(batch, kv_heads, length, dim)` view of it, so
  the model's own attention kernel runs unchanged on it;
- *ragged*: segment capacities are multiples of `page_size`, so the CPU attention path can read the buffer as
  `(pages, page_size, dim)` without copying it (`omnipress.cache.attention`).

`get_seq_length()` returns the *logical* length (every column the layer has seen, evicted ones and left padding
included), so new tokens continue at the original positions. Decoding a ragged layer needs omnipress's attention
path: `update()` refuses to run unless an omnipress context on the model has bound the layer (see
`omnipress.core.session`); nothing global is involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import CacheLayerMixin

if TYPE_CHECKING:
    from ..kv.budgets import RaggedIndices

PAGE_SIZE = None
"""Default capacity granularity of ragged segments: `None` picks one per layer (`page_size_for`)."""


def page_size_for(lengths: Sequence[int]) -> int:
    """A page size for segments of these lengths: about 1/16 of the mean length, a power of two in [4, 256].

    Pages trade memory for speed: a segment wastes at most `page - 1` slots (about 3% of the kept entries on
    average), and the pure-PyTorch attention path does one small matmul per page. At a budget of 1024 entries per
    head this gives 64-token pages.
    """
    mean = sum(lengths) / max(1, len(lengths))
    target = max(4.0, min(256.0, mean / 16))
    return 1 << math.ceil(math.log2(target))


KeepSpec = "torch.Tensor | RaggedIndices | Sequence[torch.Tensor] | None"


class RaggedLayer(CacheLayerMixin):
    """One decoder layer's KV cache with per-(row, KV head) lengths and spare capacity (see module docstring).

    Build it with `from_dense` or `from_packed`; the constructor takes an already laid-out buffer.
    """

    is_croppable = True
    is_sliding = False
    supports_early_init = False

    def __init__(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        positions: torch.Tensor,
        lengths: Sequence[int],
        capacities: Sequence[int],
        *,
        batch_size: int,
        num_heads: int,
        logical_length: int,
        page_size: int = 64,
        growth: float = 0.25,
    ) -> None:
        super().__init__()
        segments = batch_size * num_heads
        if len(lengths) != segments or len(capacities) != segments:
            raise ValueError(
                f"expected {segments} segment lengths and capacities (batch {batch_size} x {num_heads} kv heads), "
                f"got {len(lengths)} and {len(capacities)}"
            )
        if any(n < 0 or n > c for n, c in zip(lengths, capacities)):
            raise ValueError("every segment length must lie in [0, capacity]")
        total = sum(capacities)
        if keys.shape[0] != total or values.shape[0] != total or positions.shape[0] != total:
            raise ValueError(
                f"buffers disagree with the capacities: keys {tuple(keys.shape)}, values {tuple(values.shape)}, "
                f"positions {tuple(positions.shape)}, total capacity {total}"
            )
        if page_size < 1 or not growth > 0:
            raise ValueError(f"page_size must be >= 1 and growth > 0, got {page_size} and {growth}")
        self.keys, self.values, self.positions = keys, values, positions
        self.batch_size, self.num_heads = batch_size, num_heads
        self.logical_length = int(logical_length)
        self.page_size, self.growth = int(page_size), float(growth)
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.session: Any = None  # the omnipress session that may decode this layer (set by the session)
        self._set_layout(list(lengths), list(capacities))

    def __deepcopy__(self, memo: dict[int, Any]) -> RaggedLayer:
        """A copy with its own buffers; not bound to any session (the next omnipress context binds it)."""
        copy = RaggedLayer.__new__(RaggedLayer)
        memo[id(self)] = copy
        copy.__dict__.update(self.__dict__)
        copy.keys, copy.values, copy.positions = self.keys.clone(), self.values.clone(), self.positions.clone()
        copy.session = None
        copy._set_layout(self.host_lengths, list(self._capacities))
        return copy

    # -- layout bookkeeping (host side, no device reads) --------------------------------------------------------
    def _set_layout(self, lengths: list[int], capacities: list[int]) -> None:
        device = self.keys.device
        self._base_lengths = lengths  # host lengths at the last layout change
        self._appended = 0  # tokens appended to every segment since then
        self._capacities = capacities
        starts = [0]
        for c in capacities:
            starts.append(starts[-1] + c)
        self._starts_host = starts
        self.lengths = torch.tensor(lengths, dtype=torch.int32, device=device)
        self.starts = torch.tensor(starts, dtype=torch.int32, device=device)  # (segments + 1,)
        self._headroom = min((c - n for n, c in zip(lengths, capacities)), default=0)
        self._max_length = max(lengths, default=0)
        first_c = capacities[0] if capacities else 0
        same_length = all(n == lengths[0] for n in lengths)
        self._equal_capacity = all(c == first_c for c in capacities)
        self._uniform = same_length and self._equal_capacity
        self._attention_meta: dict[str, Any] = {}

    @property
    def num_segments(self) -> int:
        return self.batch_size * self.num_heads

    @property
    def host_lengths(self) -> list[int]:
        """Entries per segment, batch-major (known on the host: no device read)."""
        return [n + self._appended for n in self._base_lengths]

    @property
    def capacities(self) -> list[int]:
        return list(self._capacities)

    @property
    def max_length(self) -> int:
        """The longest segment (host value)."""
        return self._max_length

    @property
    def is_uniform(self) -> bool:
        """Every segment has the same length and capacity: `dense()` is a view of the buffers."""
        return self._uniform

    @property
    def equal_capacity(self) -> bool:
        """Every segment has the same capacity: `capacity_view()` reads the buffers as one dense tensor."""
        return self._equal_capacity

    @property
    def kept_per_head(self) -> list[int]:
        return self.host_lengths

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        keys: torch.Tensor,
        values: torch.Tensor,
        keep: torch.Tensor | RaggedIndices | Sequence[torch.Tensor] | None = None,
        *,
        key_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        logical_length: int | None = None,
        reserve: int = 0,
        page_size: int | None = PAGE_SIZE,
        growth: float = 0.25,
    ) -> RaggedLayer:
        """Keep the entries `keep` of dense `(batch, kv_heads, seq, dim)` keys and values.

        Parameters
        ----------
        keep
            `(batch, kv_heads, k)` positions (same count for every head: a uniform layer), `RaggedIndices`, a sequence
            of `batch * kv_heads` 1-D position tensors (batch-major), or `None`: every entry (every entry of
            `key_mask` when given). Positions index the `seq` axis and must be ascending per head.
        key_mask
            `(batch, 1 or kv_heads, seq)` bool of real entries, used with `keep=None` (left padding is dropped).
        positions
            `(batch, 1 or kv_heads, seq)` cache column of every entry; default `0 .. seq-1`.
        logical_length
            Columns seen so far; default `seq`.
        reserve
            Spare slots per segment for decoding (the layer grows by itself when they run out).
        page_size
            Capacity granularity of a ragged layer (`None`: `page_size_for` the kept lengths).
        """
        bsz, heads, seq, _ = keys.shape
        device = keys.device
        if keep is None and key_mask is not None:
            mask = torch.broadcast_to(key_mask.to(device), (bsz, heads, seq))
            if bool(mask.all()):
                keep = None
            else:
                flat = mask.reshape(bsz * heads, seq).nonzero(as_tuple=True)[1]
                from ..kv.budgets import RaggedIndices  # kv imports this package

                keep = RaggedIndices(flat=flat, lengths=mask.sum(-1))
        if keep is None:
            keep = torch.arange(seq, device=device).expand(bsz, heads, seq)
        columns = None
        if positions is not None:
            columns = torch.broadcast_to(positions.to(device), (bsz, heads, seq)).reshape(bsz * heads, seq)
        if isinstance(keep, torch.Tensor):
            if keep.dim() != 3 or keep.shape[:2] != (bsz, heads):
                raise ValueError(f"keep must be (batch, kv_heads, k) = ({bsz}, {heads}, k), got {tuple(keep.shape)}")
            keep.shape[-1]
            keep = keep.to(device=device, dtype=torch.long)
            idx = keep.unsqueeze(-1)
            kept_k = keys.gather(2, idx.expand(-1, -1, -1, keys.shape[-1]))  # (batch, kv_heads, k, dim)
            kept_v = values.gather(2, idx.expand(-1, -1, -1, values.shape[-1]))
            pos = keep if columns is None else columns.view(bsz, heads, seq).gather(2, keep)
            return cls._uniform_from(
                kept_k,
                kept_v,
                pos.to(torch.int32),
                logical_length=seq if logical_length is None else logical_length,
                reserve=reserve,
                page_size=page_size,
                growth=growth,
            )
        from ..kv.budgets import RaggedIndices

        if isinstance(keep, RaggedIndices):
            lengths, flat_pos = keep.lengths.reshape(-1).to(device), keep.flat.to(device)
        else:
            if len(keep) != bsz * heads:
                raise ValueError(f"expected {bsz * heads} per-head index tensors, got {len(keep)}")
            lengths = torch.tensor([len(ix) for ix in keep], dtype=torch.long, device=device)
            flat_pos = torch.cat([torch.as_tensor(ix).reshape(-1) for ix in keep]).to(device=device, dtype=torch.long)
        if lengths.numel() != bsz * heads:
            raise ValueError(f"expected lengths for {bsz * heads} heads, got {lengths.numel()}")
        rows = torch.repeat_interleave(torch.arange(bsz * heads, device=device), lengths)
        flat_k = keys.reshape(bsz * heads, seq, -1)[rows, flat_pos]  # (total_kept, dim)
        flat_v = values.reshape(bsz * heads, seq, -1)[rows, flat_pos]
        pos = flat_pos if columns is None else columns[rows, flat_pos]
        return cls.from_packed(
            flat_k,
            flat_v,
            lengths,
            pos,
            batch_size=bsz,
            num_heads=heads,
            logical_length=seq if logical_length is None else logical_length,
            reserve=reserve,
            page_size=page_size,
            growth=growth,
        )

    @classmethod
    def _uniform_from(
        cls,
        keys: torch.Tensor,
        values: torch.Tensor,
        positions: torch.Tensor,
        *,
        logical_length: int,
        reserve: int,
        page_size: int | None,
        growth: float,
    ) -> RaggedLayer:
        """A uniform layer from `(batch, kv_heads, k, dim)` tensors, `reserve` spare slots per segment."""
        bsz, heads, k, _ = keys.shape
        cap = k + max(0, reserve)
        buf_k = keys.new_zeros(bsz, heads, cap, keys.shape[-1])
        buf_v = values.new_zeros(bsz, heads, cap, values.shape[-1])
        buf_p = torch.full((bsz, heads, cap), -1, dtype=torch.int32, device=keys.device)
        buf_k[:, :, :k] = keys
        buf_v[:, :, :k] = values
        buf_p[:, :, :k] = positions
        segments = bsz * heads
        return cls(
            buf_k.view(segments * cap, -1),
            buf_v.view(segments * cap, -1),
            buf_p.view(-1),
            [k] * segments,
            [cap] * segments,
            batch_size=bsz,
            num_heads=heads,
            logical_length=logical_length,
            page_size=page_size or page_size_for([k]),
            growth=growth,
        )

    @classmethod
    def from_packed(
        cls,
        keys: torch.Tensor,
        values: torch.Tensor,
        lengths: torch.Tensor | Sequence[int],
        positions: torch.Tensor,
        *,
        batch_size: int,
        num_heads: int,
        logical_length: int,
        reserve: int = 0,
        page_size: int | None = PAGE_SIZE,
        growth: float = 0.25,
    ) -> RaggedLayer:
        """From segments stored back to back: `keys (sum(lengths), dim)`, batch-major then KV head."""
        host = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
        segments = batch_size * num_heads
        if len(host) != segments:
            raise ValueError(
                f"lengths has {len(host)} entries, expected batch_size*num_heads = {segments} "
                f"({batch_size}x{num_heads})"
            )
        total = sum(host)
        if keys.shape[0] != total or values.shape[0] != total or positions.shape[0] != total:
            raise ValueError(
                f"packed tensors disagree with lengths: keys {tuple(keys.shape)}, values {tuple(values.shape)}, "
                f"positions {tuple(positions.shape)}, sum(lengths) = {total}"
            )
        if all(n == host[0] for n in host):
            k = host[0] if host else 0
            return cls._uniform_from(
                keys.view(batch_size, num_heads, k, -1),
                values.view(batch_size, num_heads, k, -1),
                positions.view(batch_size, num_heads, k).to(torch.int32),
                logical_length=logical_length,
                reserve=reserve,
                page_size=page_size,
                growth=growth,
            )
        page_size = page_size or page_size_for(host)
        caps = [_round_up(n + max(0, reserve), page_size) for n in host]
        layer = cls._empty(keys, values, caps, batch_size, num_heads, logical_length, page_size, growth)
        dest = _slot_index(host, layer._starts_host, keys.device)
        layer.keys[dest] = keys
        layer.values[dest] = values
        layer.positions[dest] = positions.to(torch.int32)
        layer._set_layout(host, caps)
        return layer

    @classmethod
    def _empty(
        cls,
        like_k: torch.Tensor,
        like_v: torch.Tensor,
        capacities: list[int],
        batch_size: int,
        num_heads: int,
        logical_length: int,
        page_size: int,
        growth: float,
    ) -> RaggedLayer:
        total = sum(capacities)
        return cls(
            like_k.new_zeros(total, like_k.shape[-1]),
            like_v.new_zeros(total, like_v.shape[-1]),
            torch.full((total,), -1, dtype=torch.int32, device=like_k.device),
            [0] * len(capacities),
            capacities,
            batch_size=batch_size,
            num_heads=num_heads,
            logical_length=logical_length,
            page_size=page_size,
            growth=growth,
        )

    # -- views ---------------------------------------------------------------------------------------------------
    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(batch, kv_heads, length, dim)` views of keys and values; only for uniform layers (no copy)."""
        if not self._uniform:
            raise ValueError("dense() needs the same length and capacity in every segment; this layer is ragged")
        cap = self._capacities[0] if self._capacities else 0
        n = self._max_length
        shape = (self.batch_size, self.num_heads, cap)
        return (
            self.keys.view(*shape, -1)[:, :, :n],
            self.values.view(*shape, -1)[:, :, :n],
        )

    def capacity_view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(batch, kv_heads, capacity, dim)` views of keys and values with the `(batch, kv_heads, capacity)` bool
        mask of the slots holding entries; only when every segment has the same capacity (no copy)."""
        if not self._equal_capacity:
            raise ValueError("capacity_view() needs the same capacity in every segment")
        cap = self._capacities[0] if self._capacities else 0
        shape = (self.batch_size, self.num_heads, cap)
        filled = torch.arange(cap, device=self.device) < self.lengths.view(*shape[:2], 1)
        return self.keys.view(*shape, -1), self.values.view(*shape, -1), filled

    def dense_positions(self) -> torch.Tensor:
        """`(batch, kv_heads, length)` view of the stored columns; only for uniform layers."""
        if not self._uniform:
            raise ValueError("dense_positions() needs a uniform layer")
        cap = self._capacities[0] if self._capacities else 0
        return self.positions.view(self.batch_size, self.num_heads, cap)[:, :, : self._max_length]

    def segments(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-segment `(len_s, dim)` views of keys and values (batch-major, then KV head), without copies."""
        starts, lengths = self._starts_host, self.host_lengths
        keys = [self.keys[starts[s] : starts[s] + n] for s, n in enumerate(lengths)]
        values = [self.values[starts[s] : starts[s] + n] for s, n in enumerate(lengths)]
        return keys, values

    def head_positions(self) -> list[torch.Tensor]:
        """Cache columns of each segment's entries (batch-major, then KV head)."""
        starts = self._starts_host
        return [self.positions[starts[s] : starts[s] + n] for s, n in enumerate(self.host_lengths)]

    def padded(self, *, right_aligned: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copies as dense `(batch, kv_heads, longest, dim)` keys and values, with the bool mask of real entries and
        the `(batch, kv_heads, longest)` columns (-1 on padding).

        With `right_aligned` every segment's last entry sits in the last column (left padding), so "the last W
        entries" are the same columns in every segment. Used by decoding-time scoring, not by attention.
        """
        lengths = self.host_lengths
        width = max(lengths, default=0)
        segments = self.num_segments
        device = self.keys.device
        lens = torch.tensor(lengths, device=device)
        col = torch.arange(width, device=device)
        if right_aligned:
            valid = col.unsqueeze(0) >= (width - lens).unsqueeze(1)  # (segments, width)
        else:
            valid = col.unsqueeze(0) < lens.unsqueeze(1)
        src = _slot_index(lengths, self._starts_host, device)
        keys = self.keys.new_zeros(segments, width, self.keys.shape[-1])
        values = self.values.new_zeros(segments, width, self.values.shape[-1])
        positions = torch.full((segments, width), -1, dtype=torch.int32, device=device)
        keys[valid] = self.keys[src]
        values[valid] = self.values[src]
        positions[valid] = self.positions[src]
        shape = (self.batch_size, self.num_heads, width)
        return (
            keys.view(*shape, -1),
            values.view(*shape, -1),
            valid.view(shape),
            positions.view(shape),
        )

    # -- CacheLayerMixin -------------------------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("a RaggedLayer is built from existing keys and values, not lazily")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `q` new tokens `(batch, kv_heads, q, dim)` to every segment, in place (no host-device sync).

        Returns the new states unchanged: omnipress's attention path reads the layer itself.
        """
        session = self.session
        if session is None or not session.active:
            raise RuntimeError(
                "this cache was compressed by omnipress and can only be decoded inside an omnipress context, "
                "e.g. `with press(model): model.generate(...)`"
            )
        self.append(key_states, value_states)
        return key_states, value_states

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """`update` without the context check (for library code that owns the layer)."""
        bsz, heads, q, _ = key_states.shape
        if (bsz, heads) != (self.batch_size, self.num_heads):
            raise ValueError(
                f"new states have batch {bsz} and {heads} kv heads, "
                f"the cache has {self.batch_size} and {self.num_heads}"
            )
        if q > self._headroom:
            self._grow(q)
        columns = torch.arange(self.logical_length, self.logical_length + q, device=self.device, dtype=torch.int32)
        if self._uniform:
            cap, n = self._capacities[0], self._max_length
            shape = (bsz, heads, cap)
            self.keys.view(*shape, -1)[:, :, n : n + q] = key_states
            self.values.view(*shape, -1)[:, :, n : n + q] = value_states
            self.positions.view(shape)[:, :, n : n + q] = columns
        else:
            offsets = self._append_offsets(q)
            dest = (self.starts[:-1] + self.lengths).unsqueeze(1) + offsets  # (segments, q) slots
            dest = dest.reshape(-1).long()
            self.keys.index_copy_(0, dest, key_states.reshape(-1, key_states.shape[-1]))
            self.values.index_copy_(0, dest, value_states.reshape(-1, value_states.shape[-1]))
            self.positions.index_copy_(0, dest, columns.repeat(self.num_segments))
        self.lengths += q
        self._appended += q
        self._headroom -= q
        self._max_length += q
        self.logical_length += q

    def _append_offsets(self, q: int) -> torch.Tensor:
        cached = self._attention_meta.get(("append", q))
        if cached is None:
            cached = torch.arange(q, device=self.device, dtype=torch.int32).unsqueeze(0)
            self._attention_meta["append", q] = cached
        return cached

    def _grow(self, needed: int) -> None:
        """Give every segment room for `needed` more tokens plus `growth` of its length (one copy of the layer)."""
        lengths = self.host_lengths
        spare = [needed + max(self.page_size, math.ceil(self.growth * n)) for n in lengths]
        if self._uniform:
            spare = [max(spare)] * len(spare)
            caps = [n + s for n, s in zip(lengths, spare)]
        else:
            caps = [_round_up(n + s, self.page_size) for n, s in zip(lengths, spare)]
        self._relayout(lengths, caps)

    def _relayout(self, lengths: list[int], capacities: list[int]) -> None:
        """Move every segment's entries into a fresh buffer with the given capacities."""
        src = _slot_index(lengths, self._starts_host, self.device)
        dest = _slot_index(lengths, _cumulative(capacities), self.device)
        self._replace(src, dest, lengths, capacities, batch_size=self.batch_size)

    def get_seq_length(self) -> int:
        """Logical length: every column seen, evicted ones included (decoding positions continue from here)."""
        return self.logical_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.logical_length + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise RuntimeError("a compressed (ragged) cache layer cannot be reset; build a new cache instead")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row `b` takes the entries of row `beam_idx[b]` (no host-device sync).

        Beams of one prompt share its compressed prompt, so their segments have the same capacities; a reorder that
        would move a segment into one of a different capacity is an error (checked on the device).
        """
        beam_idx = beam_idx.to(self.device)
        heads = self.num_heads
        if self._uniform:
            cap = self._capacities[0]
            shape = (self.batch_size, heads, cap)
            self.keys = self.keys.view(*shape, -1).index_select(0, beam_idx).view(-1, self.keys.shape[-1])
            self.values = self.values.view(*shape, -1).index_select(0, beam_idx).view(-1, self.values.shape[-1])
            self.positions = self.positions.view(shape).index_select(0, beam_idx).view(-1)
            return
        src = (beam_idx.unsqueeze(1) * heads + torch.arange(heads, device=self.device)).reshape(-1)  # (segments,)
        meta = self._slot_meta()
        caps = meta["caps"]
        same = (caps.index_select(0, src) == caps).all() & (self.lengths.index_select(0, src) == self.lengths).all()
        torch._assert_async(
            same,
            "beam reorder between segments of different lengths (rows of a beam group were compressed differently)",
        )
        source_slot = self.starts.index_select(0, src).long()[meta["slot_segment"]] + meta["slot_offset"]
        self.keys = self.keys.index_select(0, source_slot)
        self.values = self.values.index_select(0, source_slot)
        self.positions = self.positions.index_select(0, source_slot)
        self.lengths = self.lengths.index_select(0, src)

    def _slot_meta(self) -> dict[str, torch.Tensor]:
        """Per-slot segment id and offset inside its segment, per-segment capacity (cached per layout)."""
        meta = self._attention_meta.get("slots")
        if meta is None:
            caps = torch.tensor(self._capacities, dtype=torch.long, device=self.device)
            total = int(sum(self._capacities))
            segment = torch.repeat_interleave(torch.arange(len(caps), device=self.device), caps, output_size=total)
            starts = torch.tensor(self._starts_host[:-1], dtype=torch.long, device=self.device)
            offset = torch.arange(total, device=self.device) - starts[segment]
            meta = {"caps": caps, "slot_segment": segment, "slot_offset": offset}
            self._attention_meta["slots"] = meta
        return meta

    def crop(self, max_length: int) -> None:
        """Forget every column at or after `max_length` (negative: remove that many columns from the end)."""
        if max_length < 0:
            max_length = self.logical_length + max_length
        if max_length >= self.logical_length:
            return
        self.retain_where(lambda positions: positions < max_length)
        self.logical_length = max(0, max_length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row `repeats` times (as `generate` does for `num_return_sequences` on an existing cache)."""
        index = torch.arange(self.batch_size, device=self.device).repeat_interleave(repeats)
        self.batch_select_indices(index)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices` (in that order)."""
        indices = torch.as_tensor(indices, device=self.device).long()
        heads = self.num_heads
        rows = indices.tolist()
        segments = [r * heads + h for r in rows for h in range(heads)]
        lengths = self.host_lengths
        new_lengths = [lengths[s] for s in segments]
        caps = [self._capacities[s] for s in segments]
        src = torch.cat([self._segment_slots(s, lengths[s]) for s in segments]) if segments else self._no_slots()
        dest = _slot_index(new_lengths, _cumulative(caps), self.device)
        self._replace(src, dest, new_lengths, caps, batch_size=len(rows))

    def remap_columns(self, table: torch.Tensor, logical_length: int) -> None:
        """Renumber the stored columns through `table` `(batch, n)`: an entry of row `b` stored at column `c`
        becomes column `table[b, c]`, and the layer's logical length becomes `logical_length`.

        Used when a method prefilled a shortened sequence (a token pruner dropped columns before the language
        model): the cache then says where each kept entry sat in the full prompt, and decoding continues after it.
        """
        if table.dim() != 2 or table.shape[0] != self.batch_size:
            raise ValueError(f"table must be (batch={self.batch_size}, columns), got {tuple(table.shape)}")
        meta = self._slot_meta()
        rows = meta["slot_segment"] // self.num_heads  # (capacity,) row of every slot
        valid = meta["slot_offset"] < self.lengths.long()[meta["slot_segment"]]
        old = self.positions.long().clamp(0, table.shape[1] - 1)
        mapped = table.to(self.device).long()[rows, old].to(torch.int32)
        self.positions = torch.where(valid, mapped, self.positions)
        self.logical_length = int(logical_length)

    def relabel_tail(self, columns: torch.Tensor, logical_length: int) -> None:
        """Give the last `q = len(columns)` entries of every segment (the tokens `append` just wrote) the cache
        columns `columns` `(q,)`, and set the logical length.

        For a prefill of a pruned token set: the kept tokens are appended in order, and their columns become the
        ones they have in the unpruned sequence, so later tokens continue after it. No host-device sync.
        """
        q = int(columns.shape[0])
        if q > min(self.host_lengths, default=0):
            raise ValueError(f"cannot relabel {q} entries: a segment holds fewer")
        columns = columns.to(device=self.device, dtype=torch.int32)
        if self._uniform:
            n = self._max_length
            self.positions.view(self.batch_size, self.num_heads, self._capacities[0])[:, :, n - q : n] = columns
        else:
            slots = (self.starts[:-1] + self.lengths - q).unsqueeze(1) + self._append_offsets(q)  # (segments, q)
            self.positions.index_copy_(0, slots.reshape(-1).long(), columns.repeat(self.num_segments))
        self.logical_length = int(logical_length)

    def pop(self, count: int, *, logical_length: int | None = None) -> None:
        """Remove the last `count` entries of every segment: undo `append` calls (a question and its answer added
        to a streaming cache), with no copy and no host-device sync. The freed slots are zeroed again and the
        logical length goes back by `count` (or to `logical_length`).
        """
        if count < 0 or count > min(self.host_lengths, default=0):
            raise ValueError(f"cannot pop {count} entries: every segment must hold at least that many")
        if count == 0:
            if logical_length is not None:
                self.logical_length = int(logical_length)
            return
        if self._uniform:
            n = self._max_length
            shape = (self.batch_size, self.num_heads, self._capacities[0])
            self.keys.view(*shape, -1)[:, :, n - count : n] = 0
            self.values.view(*shape, -1)[:, :, n - count : n] = 0
            self.positions.view(shape)[:, :, n - count : n] = -1
        else:
            slots = (self.starts[:-1] + self.lengths - count).unsqueeze(1) + self._append_offsets(count)
            slots = slots.reshape(-1).long()  # (segments * count,)
            self.keys.index_fill_(0, slots, 0)
            self.values.index_fill_(0, slots, 0)
            self.positions.index_fill_(0, slots, -1)
        self.lengths -= count
        self._appended -= count
        self._headroom += count
        self._max_length -= count
        self.logical_length = self.logical_length - count if logical_length is None else int(logical_length)

    # -- eviction on a live cache --------------------------------------------------------------------------------
    def retain(self, keep: torch.Tensor | RaggedIndices | Sequence[torch.Tensor], *, reserve: int = 0) -> None:
        """Keep, per segment, the entries at the given indices (ascending, `0 .. length-1` inside the segment).

        `keep` is a `(batch, kv_heads, k)` tensor, `RaggedIndices` or one 1-D tensor per segment. Everything else is
        freed: the layer is rebuilt compact (plus `reserve` spare slots per segment). Not a decode-step operation: it
        reads the new lengths on the host.
        """
        from ..kv.budgets import RaggedIndices

        segments = self.num_segments
        if isinstance(keep, torch.Tensor):
            if keep.dim() != 3 or keep.shape[:2] != (self.batch_size, self.num_heads):
                raise ValueError(
                    f"keep must be (batch, kv_heads, k) = ({self.batch_size}, {self.num_heads}, k), "
                    f"got {tuple(keep.shape)}"
                )
            lengths = [int(keep.shape[-1])] * segments
            flat = keep.reshape(-1).to(self.device).long()
        elif isinstance(keep, RaggedIndices):
            lengths = [int(n) for n in keep.lengths.reshape(-1).tolist()]
            flat = keep.flat.to(self.device).long()
        else:
            if len(keep) != segments:
                raise ValueError(f"expected {segments} per-segment index tensors, got {len(keep)}")
            lengths = [len(ix) for ix in keep]
            flat = torch.cat([torch.as_tensor(ix).reshape(-1) for ix in keep]).to(self.device).long()
        current = self.host_lengths
        if len(lengths) != segments:
            raise ValueError(f"expected indices for {segments} segments, got {len(lengths)}")
        if any(n > c for n, c in zip(lengths, current)):
            raise ValueError("cannot keep more entries than a segment holds")
        if flat.numel() and (bool((flat < 0).any()) or bool((flat >= _repeat(current, lengths, self.device)).any())):
            raise ValueError("keep indices must lie in [0, length) of their segment")
        base = torch.tensor(self._starts_host[:-1], dtype=torch.long, device=self.device)
        seg = torch.repeat_interleave(
            torch.arange(segments, device=self.device), torch.tensor(lengths, device=self.device)
        )
        src = base[seg] + flat
        self._rebuild(src, lengths, reserve)

    def retain_where(self, predicate: Any, *, reserve: int = 0) -> None:
        """Keep the entries whose cache column satisfies `predicate(columns) -> bool tensor` (e.g. drop a frame's
        columns from a streaming cache). Not a decode-step operation."""
        lengths = self.host_lengths
        slots = _slot_index(lengths, self._starts_host, self.device)
        keep = predicate(self.positions[slots])
        if keep.dtype != torch.bool or keep.shape != slots.shape:
            raise ValueError("predicate must return a bool tensor with one value per stored entry")
        counts = torch.tensor(lengths, device=self.device)
        seg = torch.repeat_interleave(torch.arange(self.num_segments, device=self.device), counts)
        new_lengths = torch.bincount(seg[keep], minlength=self.num_segments).tolist()
        self._rebuild(slots[keep], new_lengths, reserve)

    def _rebuild(self, src: torch.Tensor, lengths: list[int], reserve: int) -> None:
        if lengths and all(n == lengths[0] for n in lengths):
            caps = [lengths[0] + max(0, reserve)] * len(lengths)
        else:
            caps = [_round_up(n + max(0, reserve), self.page_size) for n in lengths]
        dest = _slot_index(lengths, _cumulative(caps), self.device)
        self._replace(src, dest, lengths, caps, batch_size=self.batch_size)

    def _replace(
        self, src: torch.Tensor, dest: torch.Tensor, lengths: list[int], caps: list[int], *, batch_size: int
    ) -> None:
        """Copy the entries at slots `src` to slots `dest` of fresh buffers laid out by `caps`."""
        total = sum(caps)
        keys = self.keys.new_zeros(total, self.keys.shape[-1])
        values = self.values.new_zeros(total, self.values.shape[-1])
        positions = torch.full((total,), -1, dtype=torch.int32, device=self.device)
        keys[dest] = self.keys[src]
        values[dest] = self.values[src]
        positions[dest] = self.positions[src]
        self.keys, self.values, self.positions = keys, values, positions
        self.batch_size = batch_size
        self._set_layout(lengths, caps)

    def _segment_slots(self, segment: int, length: int) -> torch.Tensor:
        start = self._starts_host[segment]
        return torch.arange(start, start + length, device=self.device)

    def _no_slots(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long, device=self.device)

    # -- accounting ----------------------------------------------------------------------------------------------
    def kv_bytes(self) -> int:
        """Bytes physically held by the key and value buffers (spare slots included)."""
        return _storage_bytes(self.keys) + _storage_bytes(self.values)

    def kept_bytes(self) -> int:
        """Bytes of the stored entries only (what the kept entries need, without spare slots)."""
        per_entry = self.keys.shape[-1] * self.keys.element_size() + self.values.shape[-1] * self.values.element_size()
        return sum(self.host_lengths) * per_entry

    def index_bytes(self) -> int:
        """Bytes of the bookkeeping tensors (columns, lengths, starts)."""
        return sum(_storage_bytes(t) for t in (self.positions, self.lengths, self.starts))

    def physical_bytes(self) -> int:
        return self.kv_bytes() + self.index_bytes()

    def __repr__(self) -> str:
        lengths = self.host_lengths
        kind = "uniform" if self._uniform else "ragged"
        return (
            f"RaggedLayer({kind}, batch={self.batch_size}, kv_heads={self.num_heads}, "
            f"kept {min(lengths, default=0)}..{max(lengths, default=0)} of {self.logical_length} columns)"
        )


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _cumulative(caps: list[int]) -> list[int]:
    starts = [0]
    for c in caps:
        starts.append(starts[-1] + c)
    return starts


def _slot_index(lengths: list[int], starts: list[int], device: torch.device) -> torch.Tensor:
    """Buffer slots of the first `lengths[s]` entries of every segment, segment by segment (host lists in, no
    device read)."""
    total = sum(lengths)
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    first = [0]
    for n in lengths[:-1]:
        first.append(first[-1] + n)
    shift = torch.tensor([s - f for s, f in zip(starts[: len(lengths)], first)], dtype=torch.long, device=device)
    lens = torch.tensor(lengths, dtype=torch.long, device=device)
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=device), lens, output_size=total)
    return torch.arange(total, device=device) + shift[seg]


def _repeat(values: list[int], counts: list[int], device: torch.device) -> torch.Tensor:
    return torch.repeat_interleave(torch.tensor(values, device=device), torch.tensor(counts, device=device))


def _storage_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()
