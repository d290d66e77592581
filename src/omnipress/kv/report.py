"""What a press removed (logical) and what memory it actually freed (physical)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerStats:
    """One decoder layer after prefill compression.

    `tokens_before` is the prompt length each KV head held; `kept_per_head` lists the entries each `(batch, kv head)`
    kept (batch-major); `bytes_before` is the dense key+value size before compression and `bytes_after` the key+value
    bytes the layer's tensors physically hold afterwards; `kept_by_modality` counts kept entries per span modality
    (summed over heads).
    """

    layer: int
    tokens_before: int
    kept_per_head: list[int]
    bytes_before: int
    bytes_after: int
    kept_by_modality: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_after(self) -> int:
        return sum(self.kept_per_head)


@dataclass
class CompressionReport:
    """Accounting of one prefill under a press: tokens and KV bytes before/after, per layer and head."""

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

    # -- totals -------------------------------------------------------------------------------------------------
    @property
    def tokens_before(self) -> int:
        """KV entries before compression, summed over layers and heads."""
        return sum(s.tokens_before * len(s.kept_per_head) for s in self.layers)

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
    def physical_ratio(self) -> float:
        """Fraction of key+value memory actually freed."""
        return 1.0 - self.kv_bytes_after / self.kv_bytes_before if self.kv_bytes_before else 0.0

    def kept_fraction(self, modality: str) -> float:
        """Fraction of a modality's KV entries kept, over all layers and heads (`"text"` for the rest)."""
        total = self.modality_tokens.get(modality, 0) * sum(len(s.kept_per_head) for s in self.layers)
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
            physical_ratio=self.physical_ratio,
        )
        return out

    def __str__(self) -> str:
        mib = 1 / 2**20
        lines = [
            f"{self.press}: prompt {self.prompt_tokens} tokens {self.modality_tokens}",
            f"  KV entries  {self.tokens_before:>9} -> {self.tokens_after}, removed {self.logical_ratio:.1%} (logical)",
            f"  KV memory   {self.kv_bytes_before * mib:>9.2f} MiB -> {self.kv_bytes_after * mib:.2f} MiB, "
            f"freed {self.physical_ratio:.1%} (physical)",
            f"  prefill {self.prefill_seconds * 1e3:.1f} ms (compression {self.compression_seconds * 1e3:.1f} ms)",
        ]
        if self.modality_tokens:
            kept = ", ".join(f"{m} {self.kept_fraction(m):.0%}" for m in self.modality_tokens)
            lines.append(f"  kept by modality: {kept}")
        if self.layers:
            lines.append("  layer  kept per head (min/mean/max)")
            for s in self.layers:
                k = s.kept_per_head
                lines.append(f"  {s.layer:>5}  {min(k)}/{sum(k) / len(k):.1f}/{max(k)} of {s.tokens_before}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)
