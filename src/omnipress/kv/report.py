"""What a press removed (logical) and what memory it actually freed (physical)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerStats:
    """One decoder layer after compression.

    `tokens_before` is the number of KV entries the layer held before (real tokens of every row times the KV heads;
    padding is not counted); `kept_per_head` lists the entries each `(row, KV head)` kept (batch-major);
    `bytes_before` is the dense key+value size of those real entries; `bytes_after` the key+value bytes the layer's
    tensors physically hold afterwards (page rounding of ragged layers included) and `kept_bytes` those of the kept
    entries alone; `kept_by_modality` counts kept entries per span modality (summed over rows and heads).
    """

    layer: int
    tokens_before: int
    kept_per_head: list[int]
    bytes_before: int
    bytes_after: int
    kept_by_modality: dict[str, int] = field(default_factory=dict)
    kept_bytes: int = 0
    note: str = ""

    @property
    def tokens_after(self) -> int:
        return sum(self.kept_per_head)


@dataclass
class CompressionReport:
    """Accounting of one prefill (and of decoding-time compressions) under a press: tokens and KV bytes before and
    after, per layer, row and head. Padding of a batch is never counted.

    `prompt_tokens` and `modality_tokens` sum the real tokens of every row; `row_tokens` lists them per row.
    """

    press: str
    compressed: bool
    batch_size: int
    num_kv_heads: int
    prompt_tokens: int
    modality_tokens: dict[str, int]
    layers: list[LayerStats] = field(default_factory=list)
    prefill_seconds: float = 0.0
    compression_seconds: float = 0.0
    index_bytes: int = 0
    note: str = ""
    row_tokens: list[int] = field(default_factory=list)
    decode_compressions: int = 0
    decode_entries_evicted: int = 0

    # -- totals -------------------------------------------------------------------------------------------------
    @property
    def tokens_before(self) -> int:
        """KV entries before compression, summed over layers, rows and heads."""
        return sum(s.tokens_before for s in self.layers)

    @property
    def tokens_after(self) -> int:
        return sum(s.tokens_after for s in self.layers)

    @property
    def logical_ratio(self) -> float:
        """Fraction of KV entries removed (kvpress's `compression_ratio` convention)."""
        return 1.0 - self.tokens_after / self.tokens_before if self.tokens_before else 0.0

    @property
    def kv_bytes_before(self) -> int:
        return sum(s.bytes_before for s in self.layers)

    @property
    def kv_bytes_after(self) -> int:
        """Key+value bytes physically held after compression (measured from the cache tensors' storage)."""
        return sum(s.bytes_after for s in self.layers)

    @property
    def kv_bytes_kept(self) -> int:
        """Key+value bytes of the kept entries alone (`kv_bytes_after` minus page rounding)."""
        return sum(s.kept_bytes for s in self.layers)

    @property
    def physical_ratio(self) -> float:
        """Fraction of key+value memory actually freed."""
        return 1.0 - self.kv_bytes_after / self.kv_bytes_before if self.kv_bytes_before else 0.0

    def kept_fraction(self, modality: str) -> float:
        """Fraction of a modality's KV entries kept, over all layers, rows and heads (`"text"` for the rest)."""
        total = self.modality_tokens.get(modality, 0) * self.num_kv_heads * len(self.layers)
        kept = sum(s.kept_by_modality.get(modality, 0) for s in self.layers)
        return kept / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            tokens_before=self.tokens_before,
            tokens_after=self.tokens_after,
            logical_ratio=self.logical_ratio,
            kv_bytes_before=self.kv_bytes_before,
            kv_bytes_after=self.kv_bytes_after,
            kv_bytes_kept=self.kv_bytes_kept,
            physical_ratio=self.physical_ratio,
        )
        return out

    def __str__(self) -> str:
        mib = 1 / 2**20
        rows = f", {self.batch_size} rows" if self.batch_size > 1 else ""
        lines = [f"{self.press}: prompt {self.prompt_tokens} tokens{rows} {self.modality_tokens}"]
        if self.layers:
            lines += [
                f"  KV entries  {self.tokens_before:>9} -> {self.tokens_after}, "
                f"removed {self.logical_ratio:.1%} (logical)",
                f"  KV memory   {self.kv_bytes_before * mib:>9.2f} MiB -> {self.kv_bytes_after * mib:.2f} MiB, "
                f"freed {self.physical_ratio:.1%} (physical)",
            ]
            spare = self.kv_bytes_after - self.kv_bytes_kept
            if self.kv_bytes_kept and spare > 0:
                share = spare / self.kv_bytes_after
                lines.append(f"  of which page rounding {spare * mib:.2f} MiB ({share:.1%} of what is held)")
        lines.append(
            f"  prefill {self.prefill_seconds * 1e3:.1f} ms (compression {self.compression_seconds * 1e3:.1f} ms)"
        )
        if self.modality_tokens and self.layers:
            kept = ", ".join(f"{m} {self.kept_fraction(m):.0%}" for m in self.modality_tokens)
            lines.append(f"  kept by modality: {kept}")
        if self.decode_compressions:
            lines.append(
                f"  decoding: compressed {self.decode_compressions} times, "
                f"{self.decode_entries_evicted} entries evicted"
            )
        if self.layers:
            lines.append("  layer  kept per head (min/mean/max)")
            for s in self.layers:
                k = s.kept_per_head
                per_head = s.tokens_before / max(1, len(k))
                lines.append(f"  {s.layer:>5}  {min(k)}/{sum(k) / len(k):.1f}/{max(k)} of {per_head:.0f}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)
