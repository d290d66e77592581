"""Cross-attention KV eviction for encoder-decoder speech models (Whisper).

Whisper's decoder attends to the encoder states (1500 per 30 s window, 50 per second) through a cross-attention
cache that every decoder layer fills at the first decoding call and then only reads. A press evicts, per layer and
head, entries of that cache: the decoder prompt's queries (start-of-transcript, language, task tokens) score the
encoder positions (non-causal softmax), the press ranks and budgets them, and the kept entries go to a
`RaggedLayer` (per-head lengths, attended non-causally), so the memory really goes and beam search reorders it
like any cache layer.

Compression counts the positions that hold audio: a clip of `n` samples fills `ceil(ceil(n / 160) / 2)`
positions, read from the feature extractor's frame `attention_mask` when the encoder gets it, else from the
log-mel floor Whisper pads with (`feature_audio_frames`).
The padding positions after the audio are kept (`whisper_padding="keep"`) or dropped (`"drop"`).

With an in-LLM audio pruner on the same model (HeadRouter, FastV, ...), the cross-attention layers from its layer K
on already hold only the encoder states it kept (a uniform `RaggedLayer`); the press compresses those, its budget
still counted on the clip's audio positions, so it keeps the smaller of its budget and what the pruner left.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..cache.ragged import RaggedLayer
from ..core.session import Listener, LMCall, ModelSession
from ..spans import ModalitySpans, Span
from .base import KVPress, LayerInputs
from .plan import duplicate_groups, kept_by_modality
from .report import CompressionReport, LayerStats
from .scoring import reduce_gqa

#: Capacity granularity of compressed cross-attention layers. They never grow (no token is appended), so the page
#: rounding of a ragged layer is pure waste: `page_size_for` would pick 128-entry pages for Whisper's ~1,450 kept
#: entries per head (64 spare slots on average, more than a 40% press on a short clip removes). 16-entry pages waste
#: under 1% and decode as fast on the paged CPU path (measured on Whisper tiny.en; 4-entry pages were slower).
CROSS_PAGE_SIZE = 16

#: Head-wise budgets give per-head lengths that differ by a few entries next to the ~1,400 padding entries every
#: head keeps. Where ragged attention would take the paged PyTorch path (not CUDA half precision, where the varlen
#: kernel reads ragged layers at full speed) and one capacity for every segment (the longest, rounded to
#: `CROSS_PAGE_SIZE`) costs at most this share of the kept entries in empty slots, the layer is laid out that way
#: and decodes through the model's own attention kernel with the empty slots masked. Trade-off measured on Whisper
#: tiny.en (CPU, short clip, AudioKV 0.4): about 23% less time per token for about 1.6% more cross-attention bytes.
CROSS_EQUAL_CAPACITY_SLACK = 0.05


@dataclass
class CrossLayerInputs(LayerInputs):
    """`LayerInputs` of a cross-attention layer: `query` holds every decoder prompt query, which sees every key."""

    cross: bool = True


def cross_attention_scores(
    query: torch.Tensor, keys: torch.Tensor, *, scaling: float, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean non-causal attention of `query` `(B, Hq, q, D)` over `keys` `(B, Hkv, N, D)`, per KV head.

    Returns `(B, Hkv, N)` float32: softmax over all `N` keys (masked ones excluded), averaged over the `q` queries
    and over each GQA group.
    """
    if query.dim() != 4 or keys.dim() != 4 or query.shape[0] != keys.shape[0] or query.shape[-1] != keys.shape[-1]:
        raise ValueError(f"query (B, Hq, q, D) and keys (B, Hkv, N, D) disagree: {query.shape} vs {keys.shape}")
    q_heads, kv_heads = query.shape[1], keys.shape[1]
    if q_heads % kv_heads:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of KV heads ({kv_heads})")
    k = keys.float().repeat_interleave(q_heads // kv_heads, dim=1)
    logits = (query.float() @ k.transpose(-1, -2)) * scaling  # (B, Hq, q, N)
    if key_mask is not None:
        mask = key_mask.expand(keys.shape[0], kv_heads, -1).repeat_interleave(q_heads // kv_heads, dim=1)
        logits = logits.masked_fill(~mask.unsqueeze(2), float("-inf"))
    return reduce_gqa(logits.softmax(-1).mean(2), kv_heads)


def cross_page_size(keep: Any) -> int:
    """Page size of a compressed cross-attention layer attended by the paged path: `CROSS_PAGE_SIZE`, or one page per
    segment (equal capacities) when that wastes at most `CROSS_EQUAL_CAPACITY_SLACK` of the kept entries."""
    lengths = keep.lengths.reshape(-1).tolist() if hasattr(keep, "lengths") else None
    if not lengths:  # a tensor of kept positions: every head keeps the same count (a uniform layer)
        return CROSS_PAGE_SIZE
    longest = -(-max(lengths) // CROSS_PAGE_SIZE) * CROSS_PAGE_SIZE
    slack = longest * len(lengths) - sum(lengths)
    return longest if slack <= CROSS_EQUAL_CAPACITY_SLACK * sum(lengths) else CROSS_PAGE_SIZE


def feature_audio_frames(input_features: torch.Tensor) -> list[int]:
    """Mel frames holding audio per row of Whisper log-mel features `(B, mel bins, frames)`.

    `WhisperFeatureExtractor` pads the waveform with zeros up to 30 s; those frames reach the log-mel floor
    (`max - 8` before scaling) in every bin. The audio ends where the trailing run of all-floor frames starts.
    """
    feats = torch.as_tensor(input_features)
    if feats.dim() != 3:
        raise ValueError(f"input_features must be (batch, mel bins, frames), got shape {tuple(feats.shape)}")
    floor = feats.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    silent = (feats == floor).all(dim=1)  # (B, frames)
    frames = feats.shape[-1]
    # length of the trailing run of silent frames
    trailing = torch.flip(silent, dims=[-1]).long().cumprod(-1).sum(-1)
    return [int(frames - t) for t in trailing.tolist()]


def audio_positions(adapter: Any, input_features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> list[int]:
    """Encoder positions holding audio per row: from the feature extractor's frame `attention_mask` `(B, frames)`
    when given, else from the padding floor of the features (`feature_audio_frames`; trailing frames below Whisper's
    80 dB floor then count as padding, as the model cannot tell them apart)."""
    frames = input_features.shape[-1]
    if not (isinstance(frame_mask, torch.Tensor) and tuple(frame_mask.shape) == (input_features.shape[0], frames)):
        lengths = torch.tensor(feature_audio_frames(input_features))
        frame_mask = (torch.arange(frames).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return adapter.audio_encoder_positions(feature_attention_mask=frame_mask)


class CrossAttentionPressListener(Listener):
    """Runs a press on the cross-attention caches of an encoder-decoder model (see module docstring)."""

    def __init__(self, press: KVPress, session: ModelSession) -> None:
        super().__init__()
        if press.decoding is not None:
            raise ValueError(
                f"{press.name} on {session.adapter.family}: decoding-time compression applies to self-attention "
                "caches; the cross-attention cache is compressed once, at the first decoding call"
            )
        self.press = press
        self.adapter = session.adapter
        self.num_layers = session.adapter.num_layers
        self.positions: list[int] | None = None  # audio positions per encoder row, from the last encoder call
        self.pending: dict[str, Any] | None = None
        self.hook_forward_pre(session.adapter.audio_encoder, self._on_encoder)
        self._session = weakref.ref(session)

    def _on_encoder(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        features = kwargs.get("input_features", args[0] if args else None)
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            self.positions = None
            return
        mask = kwargs.get("attention_mask")
        session = self._session()
        if mask is None and session is not None and session.inputs is not None:
            # a direct forward: WhisperModel does not hand the frame mask to its encoder, the session recorded it
            mask = session.inputs.get("attention_mask")
        self.positions = audio_positions(self.adapter, features, mask)

    # -- callbacks -----------------------------------------------------------------------------------------------
    def before_lm(self, session: ModelSession, call: LMCall) -> None:
        self.pending = None
        if call.past_length != 0 or not call.use_cache:  # no cache to compress (Whisper's language detection)
            return
        self.pending = {"batch": call.batch_size, "started": time.perf_counter(), "done": set(), "report": None}

    def _plan(self, keys: torch.Tensor) -> dict[str, Any]:
        pending = self.pending
        assert pending is not None
        bsz, heads, n = keys.shape[:3]
        device = keys.device
        positions = self.positions
        note = ""
        if positions is None:
            positions, note = [n] * bsz, "audio length unknown (no input_features seen): every position counted"
        elif len(positions) != bsz:
            if bsz % len(positions):
                raise ValueError(f"{len(positions)} encoded clips cannot feed a decoder batch of {bsz} rows")
            positions = [p for p in positions for _ in range(bsz // len(positions))]  # beams follow their clip
        positions = [min(p, n) for p in positions]
        cfg = self.press.budget_config
        drop = getattr(self.press, "whisper_padding", "keep") == "drop"
        masks = self._layer_masks(positions, torch.arange(n, device=device).expand(bsz, n))
        audio, valid = masks["candidates"][:, 0], masks["valid"][:, 0]
        if cfg.budget is not None:
            capacity = [min(cfg.budget, p) for p in positions]
        else:
            assert cfg.compression_ratio is not None
            capacity = [int(p * (1.0 - cfg.compression_ratio)) for p in positions]
        compress = any(c < p for c, p in zip(capacity, positions)) or (drop and not bool(audio.all()))
        report = CompressionReport(
            press=self.press.name,
            compressed=False,
            batch_size=bsz,
            num_kv_heads=heads,
            prompt_tokens=int(valid.sum()),
            modality_tokens={"audio": sum(positions), "padding": int(valid.sum()) - sum(positions)},
            row_tokens=masks["row_tokens"],
            note=note,
        )
        if not compress:
            message = (
                f"budget covers all {max(positions)} audio positions: the cross-attention cache was left untouched"
            )
            if cfg.strict:
                raise ValueError(message)
            report.note = "; ".join(filter(None, [note, message]))
        pending.update(
            masks,
            positions=positions,
            capacity=torch.tensor(capacity, device=device),
            compress=compress,
            report=report,
        )
        return pending

    def _layer_masks(self, positions: list[int], columns: torch.Tensor) -> dict[str, Any]:
        """Masks and spans of a layer holding the encoder states `columns` `(B, k)` (ascending, so the audio comes
        first): all 1500 of them, or those an in-LLM pruner kept from its layer K on (the press's budget still counts
        the clip's audio, so it keeps at most that, never more than the pruner left)."""
        audio = columns < torch.tensor(positions, device=columns.device).unsqueeze(1)  # (B, k)
        drop = getattr(self.press, "whisper_padding", "keep") == "drop"
        valid = audio if drop else torch.ones_like(audio)
        kept_audio = audio.sum(-1).tolist()
        k = columns.shape[-1]
        return {
            "valid": valid.unsqueeze(1),
            "candidates": audio.unsqueeze(1),
            "protected": (valid & ~audio).unsqueeze(1),
            "spans": [ModalitySpans(k, [Span("audio", 0, n)] if n else []) for n in kept_audio],
            "row_tokens": valid.sum(-1).tolist(),
        }

    def after_attention(
        self,
        session: ModelSession,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kwargs: dict[str, Any],
        layer: Any,
    ) -> None:
        route = session.route_of(module)
        if self.pending is None or route is None or route[0] != "cross" or route[1] in self.pending["done"]:
            return
        idx = route[1]
        plan = self.pending if self.pending["report"] is not None else self._plan(key)
        plan["done"].add(idx)
        report: CompressionReport = plan["report"]
        columns = None
        if isinstance(layer, RaggedLayer) and layer.is_uniform and layer.max_length < key.shape[2]:
            # an in-LLM pruner (HeadRouter, FastV, ...) kept these encoder states for layers >= K: compress them
            key, value = layer.dense()
            columns = layer.dense_positions()[:, :1]  # (B, 1, k): the pruner keeps the same states in every head
            plan = {**plan, **self._layer_masks(plan["positions"], columns[:, 0])}
        heads = key.shape[1]
        entry_bytes = key.shape[-1] * key.element_size() + value.shape[-1] * value.element_size()
        real = sum(plan["row_tokens"]) * heads
        if not plan["compress"]:
            report.layers.append(
                LayerStats(
                    idx,
                    real,
                    [n for n in plan["row_tokens"] for _ in range(heads)],
                    real * entry_bytes,
                    key.numel() * key.element_size() + value.numel() * value.element_size(),
                    kept_bytes=real * entry_bytes,
                )
            )
            return
        start = time.perf_counter()
        if "groups" not in plan:
            plan["groups"] = duplicate_groups(None, plan["valid"][:, 0], key, value)
        scaling = float(kwargs.get("scaling") or getattr(module, "scaling", query.shape[-1] ** -0.5))
        inputs = CrossLayerInputs(
            layer_idx=idx,
            num_layers=self.num_layers,
            query=query,
            keys=key,
            values=value,
            scaling=scaling,
            window=0,
            candidates=plan["candidates"],
            protected=plan["protected"],
            capacity=plan["capacity"],
            key_mask=plan["valid"],
            groups=plan["groups"],
            spans=plan["spans"],
        )
        with torch.no_grad():
            keep = self.press.keep_indices(inputs)
            varlen = key.is_cuda and key.dtype in (torch.float16, torch.bfloat16)
            page = CROSS_PAGE_SIZE if varlen else cross_page_size(keep)
            ragged = RaggedLayer.from_dense(
                key,
                value,
                keep,
                positions=columns,
                logical_length=None if columns is None else layer.logical_length,
                page_size=page,
            )
        session.replace_layer(module, ragged)
        report.layers.append(
            LayerStats(
                layer=idx,
                tokens_before=real,
                kept_per_head=ragged.kept_per_head,
                bytes_before=real * entry_bytes,
                bytes_after=ragged.kv_bytes(),
                kept_by_modality=kept_by_modality(keep, plan["spans"], heads, key.shape[2], key.device, rest="padding"),
                kept_bytes=ragged.kept_bytes(),
            )
        )
        report.compression_seconds += time.perf_counter() - start

    def after_lm(self, session: ModelSession, call: LMCall, output: Any) -> None:
        plan, self.pending = self.pending, None
        if plan is None or plan["report"] is None:
            return
        report: CompressionReport = plan["report"]
        report.prefill_seconds = time.perf_counter() - plan["started"]
        report.compressed = plan["compress"] and any(s.tokens_after < s.tokens_before for s in report.layers)
        if report.compressed:
            cross = getattr(call.cache, "cross_attention_cache", None)
            report.index_bytes = sum(
                layer.index_bytes() for layer in getattr(cross, "layers", []) if isinstance(layer, RaggedLayer)
            )
        self.press.report = report
