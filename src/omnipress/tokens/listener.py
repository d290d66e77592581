"""How a token pruner runs inside `generate`: its listener on the model's `ModelSession`.

At each prefill (a prompt of more than one token on an empty cache) whose recorded inputs hold video tokens (or
image tokens, with `images=True`):

1. `transform_lm_inputs` reads every video frame's features where they entered the language model (the rows of
   `inputs_embeds` at the frame's span), runs the pruner on each video (reset first: one stream per video; in chunks
   of `offline_chunk_frames` frames; with `images=True` every image is a one-frame stream of its own), drops the
   pruned columns from `inputs_embeds`, the 2-D attention mask and the position ids (each kept token keeps its
   original position, M-RoPE included; rows of a batch are left-padded again) and sets `session.prompt_spans` to
   the pruned prompt's spans, so a KV press composed with the pruner plans on the right columns;
2. `after_lm` renumbers every cache layer's columns to the unpruned prompt: a ragged layer (a composed press
   compressed it) through `RaggedLayer.remap_columns`, a plain dense layer by becoming a `RaggedLayer` holding the
   same entries with their unpruned columns (padding dropped). The cache's logical length is then the unpruned
   prompt's, which is what `generate` believes it prefilled: decoding continues at the right positions.

A pruner that keeps every token changes nothing (bit-identical to the untouched model). A plain forward under a
pruner returns outputs for the kept tokens only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from ..cache.ragged import RaggedLayer
from ..core.session import Listener, LMCall, ModelSession
from ..spans import ModalitySpans, Span
from .prompt import PrunedPrompt, prune_lm_kwargs
from .report import PruningReport

if TYPE_CHECKING:
    from .base import TokenPruner

#: families whose every image is one grid of LLM tokens (prunable as a one-frame stream with `images=True`)
GRID_IMAGE_FAMILIES = frozenset({"llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"})

#: model inputs that are not media descriptions (left out when the adapter computes spans)
_NOT_MEDIA = ("input_ids", "attention_mask", "past_key_values", "cache")


class PrunerListener(Listener):
    """Runs one token pruner on one model (see module docstring)."""

    def __init__(self, pruner: TokenPruner, session: ModelSession) -> None:
        super().__init__()
        adapter = session.adapter
        modalities = getattr(adapter, "modalities", ())
        if pruner.images and "image" in modalities and adapter.family not in GRID_IMAGE_FAMILIES:
            raise ValueError(
                f"{pruner.name}(images=True): {adapter.family} images are not one grid of tokens (any-resolution "
                f"tiles with row newlines); image pruning supports {', '.join(sorted(GRID_IMAGE_FAMILIES))}"
            )
        self.modalities = tuple(m for m in ("video", "image") if m in modalities and (m == "video" or pruner.images))
        if not self.modalities:
            raise ValueError(
                f"{pruner.name} prunes video frames, but {type(adapter.model).__name__} ({adapter.family}) takes no "
                "video input; video models: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, Qwen2.5-Omni"
                + ("" if "image" not in modalities else f" (its images: {pruner.name}(..., images=True))")
            )
        self.pruner = pruner
        self.token_ids = [int(adapter.modality_token_ids[m]) for m in self.modalities]
        # LLaVA-OneVision: frames of p*p pooled tokens; one newline token closes the video (kept, never scored)
        self.frame_tokens: int | None = getattr(adapter, "tokens_per_video_frame", None)
        self._pending: PrunedPrompt | None = None

    # -- before the language model -------------------------------------------------------------------------------
    def transform_lm_inputs(self, session: ModelSession, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        self._pending = None
        embeds = kwargs.get("inputs_embeds")
        if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or embeds.shape[1] < 2:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:  # not a prefill
            return None
        inputs = session.inputs or {}
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != tuple(embeds.shape[:2]):
            return None  # the language model was called without the model's own inputs (e.g. a streaming session)
        if not any(bool((ids == token).any()) for token in self.token_ids):
            self.pruner.report = PruningReport(self.pruner.name)  # a prompt without video: nothing to prune
            return None
        mask = kwargs.get("attention_mask")
        if not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
            recorded = inputs.get("attention_mask")
            mask = recorded if isinstance(recorded, torch.Tensor) and recorded.dim() == 2 else None
        valid = (
            mask.to(embeds.device).bool()
            if mask is not None
            else torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        )
        extra = {k: v for k, v in inputs.items() if k not in _NOT_MEDIA}
        spans = session.adapter.batch_spans(ids, None if bool(valid.all()) else valid.long(), **extra)

        keep = valid.clone()  # (batch, length)
        embeds = embeds.clone()
        before: list[list[int]] = []
        after: list[list[int]] = []
        for row, row_spans in enumerate(spans):
            row_before, row_after = self._prune_row(row, row_spans, embeds, keep)
            before.append(row_before)
            after.append(row_after)
        self.pruner.report = _report(self.pruner.name, spans, valid, keep, before, after)
        if bool((keep == valid).all()):
            return None  # everything kept: the model runs untouched
        pruned = PrunedPrompt.from_keep(keep)
        new = prune_lm_kwargs(kwargs, pruned, embeds)
        session.prompt_spans = pruned.spans(spans)
        self._pending = pruned
        return new

    def _prune_row(
        self, row: int, spans: ModalitySpans, embeds: torch.Tensor, keep: torch.Tensor
    ) -> tuple[list[int], list[int]]:
        """Prune every video of one row in place (`keep`, and `embeds` where the pruner merged tokens); returns the
        frames' token counts before and after."""
        before: list[int] = []
        after: list[int] = []
        for columns, extra in self._videos(spans):
            for counts in self._prune_stream(row, columns.to(embeds.device), embeds, keep):
                before.append(counts[0])
                after.append(counts[1])
            if extra:  # LLaVA-OneVision's closing newline: always kept, counted with the last frame
                before[-1] += extra
                after[-1] += extra
        if "image" in self.modalities:
            for span in spans.of("image"):  # every image: a one-frame stream of its own
                columns = torch.arange(span.start, span.end, device=embeds.device).unsqueeze(0)  # (1, P)
                self._prune_stream(row, columns, embeds, keep)
        return before, after

    def _prune_stream(
        self, row: int, columns: torch.Tensor, embeds: torch.Tensor, keep: torch.Tensor
    ) -> list[tuple[int, int]]:
        """Prune the frames at `columns` `(F, P)` of one row as one stream (reset first, `offline_chunk_frames` at
        a time), in place; returns every frame's token counts before and after."""
        features = embeds[row][columns]  # (F, P, D)
        self.pruner.reset()
        step = self.pruner.offline_chunk_frames or columns.shape[0]
        counts: list[tuple[int, int]] = []
        for start in range(0, columns.shape[0], step):
            cols = columns[start : start + step]  # (f, P)
            selection = self.pruner.compress(features[start : start + step])
            real = selection.indices >= 0  # (f, k)
            chosen = cols.gather(1, selection.indices.clamp(min=0))[real]  # kept columns, frame-major
            keep[row, cols.flatten()] = False
            keep[row, chosen] = True
            embeds[row, chosen] = selection.features[real]
            counts.extend((int(cols.shape[1]), n) for n in real.sum(dim=-1).tolist())
        return counts

    def _videos(self, spans: ModalitySpans) -> list[tuple[torch.Tensor, int]]:
        """Per video of a row: the `(frames, P)` columns of its frames and the number of trailing tokens after the
        last frame that are always kept (LLaVA-OneVision's closing newline)."""
        items: dict[int, list[Span]] = defaultdict(list)
        for span in spans.of("video"):
            items[span.item].append(span)
        out = []
        for item, item_spans in sorted(items.items()):
            frames = [s.frame for s in item_spans]
            if len(set(frames)) != len(frames):
                raise ValueError(
                    f"video {item}'s frame groups are split by other tokens (audio interleaved with video); token "
                    "pruning supports contiguous frame groups only"
                )
            per_frame = self.frame_tokens or item_spans[0].length
            extra = item_spans[-1].length - per_frame
            if any(s.length != per_frame for s in item_spans[:-1]) or extra < 0:
                raise ValueError(
                    f"video {item}'s frame groups have {[s.length for s in item_spans]} tokens; expected {per_frame} "
                    "each"
                )
            columns = torch.stack([torch.arange(s.start, s.start + per_frame) for s in item_spans])  # (F, P)
            out.append((columns, extra))
        return out

    # -- after the language model --------------------------------------------------------------------------------
    def after_lm(self, session: ModelSession, call: LMCall, output: Any) -> None:
        pruned, self._pending = self._pending, None
        if pruned is None or call.cache is None:
            return
        cache = call.cache
        cache = getattr(cache, "self_attention_cache", cache)
        layers = getattr(cache, "layers", None) or []
        for idx, layer in enumerate(layers):
            if isinstance(layer, RaggedLayer):
                layer.remap_columns(pruned.table, pruned.length)
                continue
            keys = getattr(layer, "keys", None)
            if not isinstance(keys, torch.Tensor) or keys.dim() != 4 or keys.shape[2] == 0:
                continue
            stored = keys.shape[2]  # the last `stored` slots (all of them unless a sliding window cut the prefix)
            columns = pruned.table[:, -stored:].to(keys.device)
            ragged = RaggedLayer.from_dense(
                keys,
                layer.values,
                key_mask=pruned.valid[:, -stored:].unsqueeze(1).to(keys.device),
                positions=columns.unsqueeze(1),
                logical_length=pruned.length,
            )
            ragged.session = session
            layers[idx] = ragged


def _report(
    method: str,
    spans: list[ModalitySpans],
    valid: torch.Tensor,
    keep: torch.Tensor,
    before: list[list[int]],
    after: list[list[int]],
) -> PruningReport:
    """Tokens per modality before (`valid`) and after (`keep`) pruning, summed over rows."""
    names = ["text", *sorted({s.modality for row in spans for s in row.spans})]
    labels = torch.zeros(valid.shape, dtype=torch.long)  # (batch, length): index into `names`
    for row, row_spans in enumerate(spans):
        for span in row_spans.spans:
            labels[row, span.start : span.end] = names.index(span.modality)
    counts_before = torch.bincount(labels[valid.cpu()], minlength=len(names)).tolist()
    counts_after = torch.bincount(labels[keep.cpu()], minlength=len(names)).tolist()
    return PruningReport(
        method=method,
        frame_tokens_before=before,
        frame_tokens_after=after,
        modality_tokens_before=dict(zip(names, counts_before)),
        modality_tokens_after=dict(zip(names, counts_after)),
        keep=keep.detach().cpu(),
    )
