"""A per-head (ragged) KV cache layer that stores only the entries a method keeps.

After head-wise eviction (AdaKV, PyramidKV, SparseMM, MixKV on those hosts) every `(batch, kv_head)` pair keeps its
own number of entries. kvpress keeps full-size tensors and masks the evicted keys, so nothing is freed. Here the kept
entries of all heads are packed back to back in one flat tensor, with one length per head::

    keys:    (total_kept, head_dim)     head 0's entries, then head 1's, ...   (batch-major, then kv-head)
    values:  (total_kept, head_dim_v)
    lengths: (batch * kv_heads,)        entries per head; sum(lengths) == total_kept
    positions: (total_kept,)            original sequence position of every entry (int32)

When all heads keep the same number of entries the flat tensor is exactly a contiguous `(batch, kv_heads, seq,
head_dim)` tensor, and `dense()` returns that view for the standard attention kernels.

`get_seq_length()` returns the *logical* length (every token the layer has seen, evicted ones included) so that new
tokens continue from the original positions, never from the compressed length. The attention over a packed layer
is `omnipress.kv.attention.packed_attention`; decoding a packed cache outside an omnipress context raises instead
of silently attending to the wrong entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import CacheLayerMixin

if TYPE_CHECKING:
    from .kv.budgets import RaggedIndices

_ACTIVE_ATTENTION_PATHS = [0]  # how many omnipress attention contexts are open (guards misuse of packed layers)


def attention_path_opened() -> None:
    _ACTIVE_ATTENTION_PATHS[0] += 1


def attention_path_closed() -> None:
    _ACTIVE_ATTENTION_PATHS[0] -= 1


class PackedLayer(CacheLayerMixin):
    """One decoder layer's KV cache with per-head lengths (see module docstring)."""

    is_croppable = False
    supports_early_init = False

    def __init__(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        lengths: torch.Tensor,
        positions: torch.Tensor,
        *,
        batch_size: int,
        num_heads: int,
        logical_length: int,
    ) -> None:
        super().__init__()
        if lengths.numel() != batch_size * num_heads:
            raise ValueError(
                f"lengths has {lengths.numel()} entries, expected batch_size*num_heads = {batch_size * num_heads}"
            )
        total = int(lengths.sum())
        if keys.shape[0] != total or values.shape[0] != total or positions.shape[0] != total:
            raise ValueError(
                f"packed tensors disagree with lengths: keys {tuple(keys.shape)}, values {tuple(values.shape)}, "
                f"positions {tuple(positions.shape)}, sum(lengths) = {total}"
            )
        self.keys, self.values = keys, values
        self.lengths = lengths.to(device=keys.device, dtype=torch.long)
        self.positions = positions
        self.batch_size, self.num_heads = batch_size, num_heads
        self.logical_length = logical_length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._uniform: int | None = self._uniform_length()

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        keys: torch.Tensor,
        values: torch.Tensor,
        keep: torch.Tensor | RaggedIndices | Sequence[torch.Tensor] | None = None,
    ) -> PackedLayer:
        """Pack dense `(batch, kv_heads, seq, dim)` keys/values, keeping the positions in `keep`.

        `keep` is a `(batch, kv_heads, k)` index tensor (same count for every head), `RaggedIndices` (flat
        positions plus per-head lengths), a sequence of `batch*kv_heads` 1-D index tensors (one per head,
        batch-major), or `None` (keep everything).
        """
        bsz, heads, seq, _ = keys.shape
        device = keys.device
        if keep is None:
            keep = torch.arange(seq, device=device).expand(bsz, heads, seq)
        if isinstance(keep, torch.Tensor):
            if keep.dim() != 3 or keep.shape[:2] != (bsz, heads):
                raise ValueError(f"keep must be (batch, kv_heads, k) = ({bsz}, {heads}, k), got {tuple(keep.shape)}")
            k = keep.shape[-1]
            idx = keep.unsqueeze(-1)
            kept_k = keys.gather(2, idx.expand(-1, -1, -1, keys.shape[-1]))  # (batch, kv_heads, k, dim)
            kept_v = values.gather(2, idx.expand(-1, -1, -1, values.shape[-1]))
            lengths = torch.full((bsz * heads,), k, dtype=torch.long, device=device)
            flat_k = kept_k.reshape(bsz * heads * k, -1)
            flat_v = kept_v.reshape(bsz * heads * k, -1)
            positions = keep.reshape(-1).to(torch.int32)
        else:
            from .kv.budgets import RaggedIndices  # a cycle at import time: kv imports this module

            if isinstance(keep, RaggedIndices):
                lengths, flat_pos = keep.lengths.reshape(-1).to(device), keep.flat.to(device)
            else:
                if len(keep) != bsz * heads:
                    raise ValueError(f"expected {bsz * heads} per-head index tensors, got {len(keep)}")
                lengths = torch.tensor([len(ix) for ix in keep], dtype=torch.long, device=device)
                flat_pos = torch.cat(list(keep)).to(device=device, dtype=torch.long)
            if lengths.numel() != bsz * heads:
                raise ValueError(f"expected lengths for {bsz * heads} heads, got {lengths.numel()}")
            rows = torch.repeat_interleave(torch.arange(bsz * heads, device=device), lengths)
            flat_k = keys.reshape(bsz * heads, seq, -1)[rows, flat_pos]  # (total_kept, dim)
            flat_v = values.reshape(bsz * heads, seq, -1)[rows, flat_pos]
            positions = flat_pos.to(torch.int32)
        return cls(
            flat_k.contiguous(),
            flat_v.contiguous(),
            lengths,
            positions,
            batch_size=bsz,
            num_heads=heads,
            logical_length=seq,
        )

    def _uniform_length(self) -> int | None:
        first = int(self.lengths[0]) if self.lengths.numel() else 0
        return first if bool((self.lengths == first).all()) else None

    # -- views ---------------------------------------------------------------------------------------------------
    @property
    def is_uniform(self) -> bool:
        return self._uniform is not None

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(batch, kv_heads, seq, dim)` views of keys and values; only for uniform layers (no copy)."""
        if self._uniform is None:
            raise ValueError("dense() needs the same length in every head; this layer is ragged")
        s = self._uniform
        return (
            self.keys.view(self.batch_size, self.num_heads, s, -1),
            self.values.view(self.batch_size, self.num_heads, s, -1),
        )

    def segments(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Per-head `(len_h, dim)` views of keys and values (batch-major, then kv-head), without copies."""
        sizes = self.lengths.tolist()
        return torch.split(self.keys, sizes), torch.split(self.values, sizes)

    def head_positions(self) -> tuple[torch.Tensor, ...]:
        """Original positions of each head's entries."""
        return torch.split(self.positions, self.lengths.tolist())

    # -- CacheLayerMixin ---------------------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("a PackedLayer is built from existing keys and values, not lazily")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `q` new tokens `(batch, kv_heads, q, dim)` to every head; returns the new states unchanged.

        The attention over the packed entries is done by omnipress's attention path, which reads this layer.
        """
        if _ACTIVE_ATTENTION_PATHS[0] <= 0:
            raise RuntimeError(
                "this cache was compressed by omnipress and can only be decoded inside an omnipress context, "
                "e.g. `with press(model): model.generate(...)`"
            )
        bsz, heads, q, _ = key_states.shape
        if (bsz, heads) != (self.batch_size, self.num_heads):
            raise ValueError(
                f"new states have batch {bsz} and {heads} kv heads, "
                f"the cache has {self.batch_size} and {self.num_heads}"
            )
        new_pos = torch.arange(self.logical_length, self.logical_length + q, device=self.device, dtype=torch.int32)
        if self._uniform is not None:
            k_old, v_old = self.dense()
            self.keys = torch.cat([k_old, key_states], dim=2).reshape(-1, k_old.shape[-1])
            self.values = torch.cat([v_old, value_states], dim=2).reshape(-1, v_old.shape[-1])
            s = self._uniform
            pos = self.positions.view(bsz * heads, s)
            self.positions = torch.cat([pos, new_pos.expand(bsz * heads, q)], dim=1).reshape(-1)
            self._uniform = s + q
            self.lengths = self.lengths + q
        else:
            n_seg = bsz * heads
            seg_id = torch.repeat_interleave(torch.arange(n_seg, device=self.device), self.lengths)
            old_dest = torch.arange(self.keys.shape[0], device=self.device) + seg_id * q
            new_len = self.lengths + q
            seg_start = torch.cumsum(new_len, 0) - new_len  # (segments,) start of each head in the new layout
            new_dest = (seg_start + self.lengths).unsqueeze(1) + torch.arange(q, device=self.device)  # (segments, q)
            total = self.keys.shape[0] + n_seg * q
            self.keys = self._scatter(self.keys, key_states, old_dest, new_dest, total)
            self.values = self._scatter(self.values, value_states, old_dest, new_dest, total)
            positions = torch.empty(total, dtype=self.positions.dtype, device=self.device)
            positions[old_dest] = self.positions
            positions[new_dest.reshape(-1)] = new_pos.repeat(n_seg)
            self.positions = positions
            self.lengths = new_len
        self.logical_length += q
        return key_states, value_states

    @staticmethod
    def _scatter(
        old: torch.Tensor, new: torch.Tensor, old_dest: torch.Tensor, new_dest: torch.Tensor, total: int
    ) -> torch.Tensor:
        out = torch.empty(total, old.shape[-1], dtype=old.dtype, device=old.device)
        out[old_dest] = old
        out[new_dest.reshape(-1)] = new.reshape(-1, new.shape[-1])  # (batch*kv_heads*q, dim), segment-major
        return out

    def get_seq_length(self) -> int:
        """Logical length: every token seen, evicted ones included (decoding positions continue from here)."""
        return self.logical_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.logical_length + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise RuntimeError("a compressed (packed) cache layer cannot be reset; build a new cache instead")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise ValueError("beam search is not supported on a compressed cache; use greedy decoding or sampling")

    # -- accounting -------------------------------------------------------------------------------------------
    @property
    def kept_per_head(self) -> list[int]:
        return self.lengths.tolist()

    def physical_bytes(self) -> int:
        """Bytes actually held by this layer's tensors (keys, values and the position index)."""
        return sum(_storage_bytes(t) for t in (self.keys, self.values, self.positions, self.lengths))

    def kv_bytes(self) -> int:
        """Bytes of the kept keys and values only."""
        return _storage_bytes(self.keys) + _storage_bytes(self.values)


def _storage_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def cache_kv_bytes(cache) -> int:
    """Physical bytes of keys and values held by every layer of a transformers `Cache`."""
    total = 0
    for layer in getattr(cache, "layers", []):
        if isinstance(layer, PackedLayer):
            total += layer.kv_bytes()
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            total += _storage_bytes(layer.keys) + _storage_bytes(layer.values)
    return total


def generated_cache(output: Any) -> Any:
    """The cache of a `generate(..., return_dict_in_generate=True)` output (`past_key_values`, or `cache` in 5.24+)."""
    cache = getattr(output, "past_key_values", None)
    return cache if cache is not None else getattr(output, "cache", None)
