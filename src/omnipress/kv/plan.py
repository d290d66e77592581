"""Prefill planning: per row, which prompt tokens are real, evictable and protected, and each row's capacity.

A (left-padded) batch is planned row by row: every row has its own modality spans (from the adapter), its own
candidates (in-scope tokens outside the observation window) and its own base capacity, so a padded batch is
compressed exactly as each prompt would be alone. Padding columns are neither candidates nor protected: they are
never kept and never counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..cache.ragged import RaggedLayer
from ..spans import ModalitySpans
from .base import KVPress, LayerInputs
from .budgets import RaggedIndices
from .report import CompressionReport, LayerStats


@dataclass
class PrefillPlan:
    """What a press compresses in one prefill (masks are `(batch, 1, N)` bool)."""

    spans: list[ModalitySpans]
    key_mask: torch.Tensor
    candidates: torch.Tensor
    protected: torch.Tensor
    capacity: torch.Tensor  # (batch,) long
    compress: bool
    report: CompressionReport
    started: float
    groups: torch.Tensor | None = None  # (batch,) representative row of each row, when some rows are duplicates

    @property
    def batch_size(self) -> int:
        return int(self.key_mask.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.key_mask.shape[-1])


def make_plan(
    press: KVPress,
    spans: list[ModalitySpans],
    valid: torch.Tensor,
    num_kv_heads: int,
    device: torch.device | str,
) -> PrefillPlan:
    """Plan one prefill of `valid.shape[0]` rows; `valid` `(batch, N)` marks the real (non-padding) columns."""
    cfg = press.budget_config
    valid = valid.to(device=device, dtype=torch.bool)
    bsz, seq_len = valid.shape
    if len(spans) != bsz:
        raise ValueError(f"got spans for {len(spans)} rows but the batch has {bsz}")
    window = min(cfg.window, seq_len)
    in_window = torch.zeros(seq_len, dtype=torch.bool, device=device)
    in_window[seq_len - window :] = True
    candidates = torch.zeros(bsz, seq_len, dtype=torch.bool, device=device)
    capacity = torch.zeros(bsz, dtype=torch.long)
    row_tokens: list[int] = []
    modality_tokens: dict[str, int] = {}
    any_in_scope = False
    for row, row_spans in enumerate(spans):
        real = valid[row]
        in_scope = row_spans.mask(cfg.scope, device=device) & real
        any_in_scope |= bool(in_scope.any())
        candidates[row] = in_scope & ~in_window
        n_cand = int(candidates[row].sum())
        n_scope = int(in_scope.sum())
        capacity[row] = cfg.capacity(n_scope, n_scope - n_cand, n_cand)
        n_real = int(real.sum())
        row_tokens.append(n_real)
        counts = _row_summary(row_spans, n_real)
        for name, count in counts.items():
            modality_tokens[name] = modality_tokens.get(name, 0) + count
    if cfg.scope != "all" and not any_in_scope:
        summary = spans[0].summary() if len(spans) == 1 else [s.summary() for s in spans]
        raise ValueError(
            f"scope {cfg.scope!r} selects no token: the prompt has {summary}; use scope='all' or give the model media "
            "of that kind"
        )
    protected = valid & ~candidates
    n_cand_rows = candidates.sum(-1).cpu()
    report = CompressionReport(
        press=press.name,
        compressed=False,
        batch_size=bsz,
        num_kv_heads=num_kv_heads,
        prompt_tokens=sum(row_tokens),
        modality_tokens=modality_tokens,
        row_tokens=row_tokens,
    )
    compress = bool((capacity < n_cand_rows).any())
    if not compress:
        message = (
            f"budget covers all {int(n_cand_rows.max())} evictable tokens (scope {cfg.scope!r}, prompt "
            f"{max(row_tokens)} tokens): nothing to compress, the cache was left untouched"
        )
        if cfg.strict:
            raise ValueError(message)
        report.note = message
    return PrefillPlan(
        spans=spans,
        key_mask=valid.unsqueeze(1),
        candidates=candidates.unsqueeze(1),
        protected=protected.unsqueeze(1),
        capacity=capacity.to(device),
        compress=compress,
        report=report,
        started=time.perf_counter(),
    )


def _row_summary(spans: ModalitySpans, n_real: int) -> dict[str, int]:
    """Real tokens per modality of one row, text being every real token outside a span."""
    out = {"text": n_real - spans.count()}
    for modality in ("image", "video", "audio"):
        if spans.of(modality):
            out[modality] = spans.count(modality)
    return out


def duplicate_groups(
    input_ids: torch.Tensor | None, valid: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor | None:
    """`(batch,)` representative row of every row whose prompt is an exact copy of an earlier row (same ids, mask,
    keys and values at the first layer, as beam search and `num_return_sequences` produce), or None if none is."""
    bsz = keys.shape[0]
    if bsz < 2:
        return None
    groups = list(range(bsz))
    found = False
    for row in range(1, bsz):
        for rep in range(row):
            if groups[rep] != rep:
                continue
            if input_ids is not None and not torch.equal(input_ids[row], input_ids[rep]):
                continue
            same = torch.equal(valid[row], valid[rep]) and torch.equal(keys[row], keys[rep])
            if same and torch.equal(values[row], values[rep]):
                groups[row] = rep
                found = True
                break
    return torch.tensor(groups, device=keys.device) if found else None


def compress_layer(
    press: KVPress,
    plan: PrefillPlan,
    layer_idx: int,
    num_layers: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float,
) -> RaggedLayer:
    """Score one layer's prompt entries, keep the selected ones in a `RaggedLayer`, record them in the report."""
    inputs = LayerInputs(
        layer_idx=layer_idx,
        num_layers=num_layers,
        query=query,
        keys=key,
        values=value,
        scaling=scaling,
        window=min(press.budget_config.window, key.shape[2]),
        candidates=plan.candidates,
        protected=plan.protected,
        capacity=plan.capacity,
        key_mask=plan.key_mask,
        groups=plan.groups,
        spans=plan.spans,
    )
    with torch.no_grad():
        keep = press.keep_indices(inputs)
        layer = RaggedLayer.from_dense(key, value, keep)
    heads = key.shape[1]
    entry_bytes = key.shape[-1] * key.element_size() + value.shape[-1] * value.element_size()
    real_entries = sum(plan.report.row_tokens) * heads
    plan.report.layers.append(
        LayerStats(
            layer=layer_idx,
            tokens_before=real_entries,
            kept_per_head=layer.kept_per_head,
            bytes_before=real_entries * entry_bytes,
            bytes_after=layer.kv_bytes(),
            kept_by_modality=kept_by_modality(keep, plan.spans, heads, key.shape[2], key.device),
            kept_bytes=layer.kept_bytes(),
        )
    )
    return layer


def uncompressed_stats(plan: PrefillPlan, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> LayerStats:
    """The report line of a layer the press left untouched: every real token kept (padding is not counted as kept,
    but the dense layer's bytes include it)."""
    heads = key.shape[1]
    entry_bytes = key.shape[-1] * key.element_size() + value.shape[-1] * value.element_size()
    real_entries = sum(plan.report.row_tokens) * heads
    counts = {name: count * heads for name, count in plan.report.modality_tokens.items()}
    return LayerStats(
        layer=layer_idx,
        tokens_before=real_entries,
        kept_per_head=[n for n in plan.report.row_tokens for _ in range(heads)],
        bytes_before=real_entries * entry_bytes,
        bytes_after=key.numel() * key.element_size() + value.numel() * value.element_size(),
        kept_by_modality=counts,
        kept_bytes=real_entries * entry_bytes,
    )


def kept_by_modality(
    keep: torch.Tensor | RaggedIndices,
    spans: list[ModalitySpans],
    heads: int,
    seq_len: int,
    device: torch.device,
    rest: str = "text",
) -> dict[str, int]:
    """Kept entries per modality (summed over rows and heads) for a selection over `seq_len` columns; columns outside
    every span count as `rest` (the text of a prompt; Whisper's padding in a cross-attention cache)."""
    names = [rest, *sorted({s.modality for row in spans for s in row.spans})]
    labels = torch.zeros(len(spans), seq_len, dtype=torch.long)  # 0 = text, 1.. = modality index
    for row, row_spans in enumerate(spans):
        for s in row_spans.spans:
            labels[row, s.start : s.end] = names.index(s.modality)
    if isinstance(keep, torch.Tensor):
        rows = torch.arange(len(spans)).view(-1, 1, 1).expand(keep.shape).reshape(-1)
        columns = keep.reshape(-1).cpu()
    else:
        lengths = keep.lengths.reshape(len(spans), heads).sum(-1).cpu()
        rows = torch.repeat_interleave(torch.arange(len(spans)), lengths)
        columns = keep.flat.cpu()
    counts = torch.bincount(labels[rows, columns], minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts)}
