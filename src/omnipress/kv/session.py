"""How a KV press runs inside a model: its listener on the model's `ModelSession`.

At each prefill (more than one new token on an empty cache) the listener plans the compression row by row
(`omnipress.kv.plan`) from the inputs the session recorded (input ids, attention mask, media, so every row gets its
own modality spans). After each decoder layer's own attention has run over the full prompt, the layer's cache is
replaced by a `RaggedLayer` holding only the kept entries; the next layers are unaffected, since a layer's output
never depends on its own cache being compressed. Later multi-token calls (a question after a compressed context,
a streaming chunk) are appended, not compressed. With `decode_budget`, `omnipress.kv.decoding` also compresses
while generating.

`capture_prefill` and `compress_captured` evaluate many presses on a single prefill: the captured queries, keys
and values do not depend on the press, so compressing them gives exactly the cache an in-forward press leaves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from ..adapters import get_adapter
from ..cache.ragged import RaggedLayer
from ..core.session import Listener, LMCall, ModelSession
from ..spans import ModalitySpans
from .base import KVPress
from .decoding import DecodingCompressor
from .plan import PrefillPlan, compress_layer, duplicate_groups, make_plan, uncompressed_stats


@dataclass
class PrefillCapture:
    """Post-RoPE queries, keys and values of every layer of one prefill, to evaluate many presses on one forward.

    `spans` is the first row's `ModalitySpans` (the usual single-prompt case), `row_spans` every row's, and `valid`
    the `(batch, N)` mask of real (non-padding) columns.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = field(default_factory=list)
    spans: ModalitySpans | None = None
    row_spans: list[ModalitySpans] = field(default_factory=list)
    valid: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None


class PressListener(Listener):
    """Runs one press on one model (see module docstring)."""

    def __init__(self, press: KVPress, session: ModelSession, capture: PrefillCapture | None = None) -> None:
        super().__init__()
        self.press = press
        self.capture = capture
        self.plan: PrefillPlan | None = None
        self.num_layers = session.adapter.num_layers
        self.num_kv_heads = session.adapter.num_key_value_heads
        self.decoder = DecodingCompressor(press) if press.decoding is not None and capture is None else None
        self._input_ids: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None

    # -- callbacks -----------------------------------------------------------------------------------------------
    def before_lm(self, session: ModelSession, call: LMCall) -> None:
        self.plan = None
        if call.is_prefill and not call.use_cache:
            raise ValueError(
                f"{self.press.name} compresses the KV cache, but this forward runs with use_cache=False (no cache: "
                "generate then recomputes the whole prompt at every step); drop use_cache=False"
            )
        if call.is_prefill:
            self.plan = self._make_plan(session, call)
            if self.decoder is not None:
                self.decoder.start(self.plan, self.press.report)
        elif self.decoder is not None and call.past_length > 0:
            self.decoder.before_step(call)

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
        plan = self.plan
        if plan is None:
            if self.decoder is not None:
                self.decoder.after_attention(session, module, query, layer, kwargs)
            return
        route = session.route_of(module)
        if route is None or route[0] != "self" or query.shape[2] != key.shape[2]:
            return
        layer_idx = route[1]
        scaling = float(kwargs.get("scaling") or getattr(module, "scaling", query.shape[-1] ** -0.5))
        if plan.groups is None and layer_idx == 0:
            plan.groups = duplicate_groups(self._input_ids, self._valid, key, value)
        if self.capture is not None:
            self.capture.layers.append((query, key, value, scaling))
            return
        if self.decoder is not None:
            self.decoder.observe_prefill(layer_idx, query)
        if not plan.compress:
            plan.report.layers.append(uncompressed_stats(plan, layer_idx, key, value))
            return
        if kwargs.get("sliding_window") is not None:
            note = f"layer {layer_idx} uses sliding-window attention: left to transformers' own bounded cache"
            if note not in plan.report.note:
                plan.report.note = "; ".join(filter(None, [plan.report.note, note]))
            plan.report.layers.append(uncompressed_stats(plan, layer_idx, key, value))
            return
        start = time.perf_counter()
        compressed = compress_layer(self.press, plan, layer_idx, self.num_layers, query, key, value, scaling)
        session.replace_layer(module, compressed)
        plan.report.compression_seconds += time.perf_counter() - start

    def after_lm(self, session: ModelSession, call: LMCall, output: Any) -> None:
        if self.decoder is not None and self.plan is None:
            self.decoder.after_step(session)
        plan, self.plan = self.plan, None
        if plan is None:
            return
        report = plan.report
        report.prefill_seconds = time.perf_counter() - plan.started
        report.compressed = plan.compress and any(s.tokens_after < s.tokens_before for s in report.layers)
        if report.compressed:
            report.index_bytes = sum(
                layer.index_bytes() for layer in getattr(call.cache, "layers", []) if isinstance(layer, RaggedLayer)
            )
        self.press.report = report
        if self.capture is not None:
            self.capture.spans = plan.spans[0]
            self.capture.row_spans = plan.spans
            self.capture.valid = plan.key_mask[:, 0]
            self.capture.input_ids = self._input_ids

    # -- planning ------------------------------------------------------------------------------------------------
    def _make_plan(self, session: ModelSession, call: LMCall) -> PrefillPlan:
        device = _device_of(session)
        if session.prompt_spans is not None:  # a method changed the prompt's tokens and says where the media are
            mask = call.attention_mask
            valid = (
                mask.to(device).bool()
                if isinstance(mask, torch.Tensor) and mask.shape == (call.batch_size, call.num_tokens)
                else torch.ones(call.batch_size, call.num_tokens, dtype=torch.bool, device=device)
            )
            _check_left_padding(valid)
            self._input_ids, self._valid = call.input_ids, valid
            return make_plan(self.press, list(session.prompt_spans), valid, self.num_kv_heads, device)
        inputs = session.inputs
        ids = inputs.get("input_ids") if inputs is not None else None
        if not (
            isinstance(ids, torch.Tensor) and ids.dim() == 2 and tuple(ids.shape) == (call.batch_size, call.num_tokens)
        ):
            inputs, ids = None, call.input_ids  # the LM was called directly (or with embeddings only)
        mask = inputs.get("attention_mask") if inputs is not None else None
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            mask = call.attention_mask
        if isinstance(mask, torch.Tensor) and mask.shape == (call.batch_size, call.num_tokens):
            valid = mask.to(device).bool()
        else:
            valid = torch.ones(call.batch_size, call.num_tokens, dtype=torch.bool, device=device)
        _check_left_padding(valid)
        spans = self._spans(session, call, ids, valid, inputs)
        self._input_ids, self._valid = ids, valid
        return make_plan(self.press, spans, valid, self.num_kv_heads, device)

    def _spans(
        self,
        session: ModelSession,
        call: LMCall,
        ids: torch.Tensor | None,
        valid: torch.Tensor,
        inputs: dict[str, Any] | None,
    ) -> list[ModalitySpans]:
        n = call.num_tokens
        if ids is None:
            if self.press.budget_config.scope != "all":
                raise ValueError(
                    "the prompt's modality spans are unknown (the language model was called with embeddings only); "
                    "call the full model with input_ids, or use scope='all'"
                )
            return [ModalitySpans(n, []) for _ in range(call.batch_size)]
        extra = {
            k: v
            for k, v in (inputs or {}).items()
            if k not in ("input_ids", "attention_mask", "past_key_values", "cache")
        }
        mask = None if bool(valid.all()) else valid.long()
        return list(session.adapter.batch_spans(ids, mask, **extra))


def _check_left_padding(valid: torch.Tensor) -> None:
    """Only left padding: every row's real tokens are its last columns."""
    if valid.all():
        return
    starts = valid.long().argmax(-1)
    columns = torch.arange(valid.shape[1], device=valid.device)
    if not bool(((columns.unsqueeze(0) >= starts.unsqueeze(1)) == valid).all()) or not bool(valid[:, -1].all()):
        raise ValueError(
            "omnipress compresses left-padded batches (tokenizer.padding_side = 'left', as generation needs); this "
            "attention mask has padding elsewhere"
        )


def _device_of(session: ModelSession) -> torch.device:
    lm = session.adapter.language_model
    device = getattr(lm, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(lm.parameters()).device


# -- many presses on one prefill ---------------------------------------------------------------------------------
class _CaptureMethod(KVPress):
    """The KV-stage method `capture_prefill` enters: records every layer's queries, keys and values."""

    def __init__(self, capture: PrefillCapture) -> None:
        from .snapkv import SnapKV

        self._probe = SnapKV(compression_ratio=0.0, window=0)
        self._capture = capture

    @property
    def budget_config(self):
        return self._probe.budget_config

    def score(self, layer):  # never called: the capture compresses nothing
        raise NotImplementedError

    def attach(self, session: ModelSession) -> Listener:
        return PressListener(self._probe, session, capture=self._capture)


def capture_prefill(model: nn.Module, **inputs: Any) -> tuple[PrefillCapture, Any]:
    """Run one prefill of `model` with a full cache and keep every layer's queries, keys and values.

    Returns the capture and the model output. Feed the capture to `compress_captured` for each press to compare
    many presses and budgets on one forward pass (identical to compressing inside the forward). A left-padded batch
    of a 1-D RoPE model gets the position ids `generate` would give it (counted over the real tokens) unless
    `position_ids` are passed; M-RoPE models compute theirs from the attention mask themselves.
    """
    from ..adapters.mrope import MRopeAdapter

    capture = PrefillCapture()
    mask = inputs.get("attention_mask")
    padded = isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all())
    if padded and "position_ids" not in inputs and not isinstance(get_adapter(model), MRopeAdapter):
        positions = mask.long().cumsum(-1) - 1
        inputs = {**inputs, "position_ids": positions.masked_fill(mask == 0, 1)}
    with torch.no_grad(), _CaptureMethod(capture)(model):
        out = model(**inputs, use_cache=True)
    if not capture.layers:
        raise ValueError("no prefill was seen: pass a prompt of more than one token")
    return capture, out


def compress_captured(press: KVPress, capture: PrefillCapture) -> tuple[DynamicCache, Any]:
    """The cache `press` would have left after the captured prefill, and its report (no model forward needed).

    Decode from it inside `with press(model):` (new tokens are appended, never re-compressed).
    """
    if capture.spans is None or not capture.layers:
        raise ValueError("the capture is empty: run `capture_prefill(model, **inputs)` on a prompt first")
    key = capture.layers[0][1]
    valid = capture.valid if capture.valid is not None else torch.ones(key.shape[0], key.shape[2], dtype=torch.bool)
    row_spans = capture.row_spans or [capture.spans]
    plan = make_plan(press, row_spans, valid, key.shape[1], key.device)
    plan.groups = duplicate_groups(capture.input_ids, valid, key, capture.layers[0][2])
    cache = DynamicCache()
    start = time.perf_counter()
    for idx, (q, k, v, scaling) in enumerate(capture.layers):
        if plan.compress:
            cache.layers.append(compress_layer(press, plan, idx, len(capture.layers), q, k, v, scaling))
        else:
            cache.update(k, v, idx)
            plan.report.layers.append(uncompressed_stats(plan, idx, k, v))
    plan.report.compression_seconds = time.perf_counter() - start
    plan.report.compressed = plan.compress
    press.report = plan.report
    return cache, plan.report
