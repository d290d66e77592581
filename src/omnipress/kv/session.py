"""Wires a press into a model for the duration of a `with press(model):` block.

Hooks (all removed on exit, no transformers class is patched):

- a forward pre-hook on the top-level model records `input_ids` and the media inputs, so the adapter can compute
  the prompt's `ModalitySpans`;
- forward pre/post hooks on the language model detect a prefill (more than one new token on an empty cache), plan
  it (which tokens are evictable, the base capacity) and time it;
- a forward pre-hook on every attention module records the cache it works on;
- the text config's attention implementation is switched to `omnipress:<base>` (see `omnipress.kv.attention`), which
  runs the model's own attention and then lets this session replace the layer's cache by a packed, compressed one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from ..adapters import get_adapter
from ..cache import PackedLayer, attention_path_closed, attention_path_opened
from ..spans import ModalitySpans
from . import attention
from .base import KVPress, LayerInputs
from .report import CompressionReport, LayerStats


@dataclass
class PrefillCapture:
    """Post-RoPE queries, keys and values of every layer of one prefill, to evaluate many presses on one forward.

    The prefill's activations do not depend on the press (each layer attends over its full keys before its cache
    is compressed), so compressing captured tensors gives exactly the cache an in-forward press would give.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = field(default_factory=list)
    spans: ModalitySpans | None = None


@dataclass
class _PrefillPlan:
    spans: ModalitySpans
    candidates: torch.Tensor  # (N,) bool
    protected: torch.Tensor  # (N,) bool
    capacity: int
    report: CompressionReport
    started: float


class PressSession:
    """Applies one press to one model (see module docstring)."""

    def __init__(self, press: KVPress, model: nn.Module, capture: PrefillCapture | None = None) -> None:
        self.press = press
        self.capture = capture
        self.model = model
        self.adapter = get_adapter(model)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._cache: Any = None
        self._pending: dict[str, Any] | None = None
        self._plan: _PrefillPlan | None = None
        self._saved_impl: str | None = None

    # -- context -------------------------------------------------------------------------------------------------
    def __enter__(self) -> PressSession:
        config = self.adapter.text_config
        self._saved_impl = config._attn_implementation
        config._attn_implementation = attention.wrapped_name(self._saved_impl)
        lm = self.adapter.language_model
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._record_inputs, with_kwargs=True))
            self._handles.append(lm.register_forward_pre_hook(self._before_lm, with_kwargs=True))
            self._handles.append(lm.register_forward_hook(self._after_lm, with_kwargs=True))
            for module in self.adapter.attention_modules:
                self._handles.append(module.register_forward_pre_hook(self._record_cache, with_kwargs=True))
                attention.attach(module, self)
        except BaseException:
            self.__exit__()
            raise
        attention_path_opened()
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        if self._handles:
            attention_path_closed()
        self._handles.clear()
        for module in self.adapter.attention_modules:
            attention.detach(module)
        self.adapter.text_config._attn_implementation = self._saved_impl
        self._plan = self._pending = self._cache = None

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _record_inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.shape[1] > 1:
            self._pending = {"input_ids": input_ids, **{k: v for k, v in kwargs.items() if k != "input_ids"}}
        else:
            self._pending = None

    def _record_cache(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._cache = cache_argument(kwargs)

    def _before_lm(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._plan = None
        embeds = kwargs.get("inputs_embeds")
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        ref = embeds if embeds is not None else input_ids
        if ref is None or ref.shape[1] <= 1:
            return
        cache = cache_argument(kwargs)
        if cache is not None and cache.get_seq_length() > 0:
            return  # continuing an existing cache: new tokens are appended, not compressed
        if kwargs.get("use_cache") is False:
            return
        self._plan = self._make_plan(ref.shape[0], ref.shape[1], input_ids, kwargs.get("attention_mask"))

    def _after_lm(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        plan, self._plan = self._plan, None
        if plan is None:
            return
        report = plan.report
        report.prefill_seconds = time.perf_counter() - plan.started
        report.compressed = bool(report.layers)
        if report.compressed:
            report.index_bytes = sum(
                layer.physical_bytes() - layer.kv_bytes()
                for layer in self._cache.layers
                if isinstance(layer, PackedLayer)
            )
        self.press.report = report

    # -- planning ------------------------------------------------------------------------------------------------
    def _make_plan(
        self, batch_size: int, seq_len: int, lm_input_ids: torch.Tensor | None, attention_mask: Any
    ) -> _PrefillPlan:
        pending = (
            self._pending if self._pending is not None and self._pending["input_ids"].shape[1] == seq_len else None
        )
        mask2d = pending.get("attention_mask") if pending is not None else attention_mask
        if isinstance(mask2d, torch.Tensor) and mask2d.dim() == 2 and not bool(mask2d.all()):
            raise ValueError(
                "omnipress presses compress unpadded prompts: the attention mask has padding. Compress one prompt at "
                "a time, or a batch of prompts with the same length"
            )
        spans = self._spans(seq_len, pending, lm_input_ids)
        device = self.adapter.language_model.device if hasattr(self.adapter.language_model, "device") else "cpu"
        return make_plan(self.press, spans, batch_size, self.adapter.num_key_value_heads, device)

    def _spans(self, seq_len: int, pending: dict[str, Any] | None, lm_input_ids: torch.Tensor | None) -> ModalitySpans:
        if pending is not None:
            input_ids = pending["input_ids"]
            extra = {k: v for k, v in pending.items() if k not in ("input_ids", "past_key_values", "cache")}
        elif lm_input_ids is not None:
            input_ids, extra = lm_input_ids, {}
        else:
            if self.press.budget_config.scope != "all":
                raise ValueError(
                    "the prompt's modality spans are unknown (the language model was called with embeddings only); "
                    "call the full model with input_ids, or use scope='all'"
                )
            return ModalitySpans(seq_len, [])
        spans = self.adapter.spans(input_ids[0], **extra)
        if input_ids.shape[0] > 1 and self.press.budget_config.scope != "all":
            for row in input_ids[1:]:
                if self.adapter.spans(row, **extra).spans != spans.spans:
                    raise ValueError(
                        "a batch compressed with a media scope needs the media at the same positions in every prompt"
                    )
        return spans

    # -- attention callbacks -------------------------------------------------------------------------------------
    def current_layer(self, module: nn.Module) -> Any:
        cache = self._cache
        if cache is None or not hasattr(cache, "layers") or module.layer_idx >= len(cache.layers):
            return None
        return cache.layers[module.layer_idx]

    def after_attention(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        plan = self._plan
        if plan is None or query.shape[2] != key.shape[2]:
            return
        if self.capture is not None:
            self.capture.spans = plan.spans
            self.capture.layers.append((query, key, value, float(module.scaling)))
            return
        if plan.capacity < 0:
            return
        start = time.perf_counter()
        self._cache.layers[module.layer_idx] = compress_layer(
            self.press, plan, module.layer_idx, self.adapter.num_layers, query, key, value, float(module.scaling)
        )
        plan.report.compression_seconds += time.perf_counter() - start


def cache_argument(kwargs: dict[str, Any]) -> Any:
    """The KV cache a forward received: `past_key_values` (transformers <= 5.23) or `cache` (5.24+)."""
    cache = kwargs.get("past_key_values")
    return cache if cache is not None else kwargs.get("cache")


def make_plan(
    press: KVPress, spans: ModalitySpans, batch_size: int, num_kv_heads: int, device: torch.device | str
) -> _PrefillPlan:
    """Which prompt tokens are evictable, which are protected, and the base capacity per head."""
    cfg = press.budget_config
    seq_len = spans.seq_len
    in_scope = spans.mask(cfg.scope, device=device)
    if cfg.scope != "all" and not bool(in_scope.any()):
        raise ValueError(
            f"scope {cfg.scope!r} selects no token: the prompt has {spans.summary()}; use scope='all' or give "
            "the model media of that kind"
        )
    window = min(cfg.window, seq_len)
    in_window = torch.zeros(seq_len, dtype=torch.bool, device=device)
    in_window[seq_len - window :] = True
    candidates = in_scope & ~in_window
    n_cand = int(candidates.sum())
    capacity = cfg.capacity(int(in_scope.sum()), int((in_scope & in_window).sum()), n_cand)
    report = CompressionReport(
        press=press.name,
        compressed=False,
        batch_size=batch_size,
        num_kv_heads=num_kv_heads,
        prompt_tokens=seq_len,
        modality_tokens=spans.summary(),
    )
    plan = _PrefillPlan(spans, candidates, ~candidates, capacity, report, time.perf_counter())
    if capacity >= n_cand:
        message = (
            f"budget covers all {n_cand} evictable tokens (scope {cfg.scope!r}, prompt {seq_len} tokens): "
            "nothing to compress, the cache was left untouched"
        )
        if cfg.strict:
            raise ValueError(message)
        report.note = message
        plan.capacity = -1  # marks "do not compress"
    return plan


def compress_captured(press: KVPress, capture: PrefillCapture) -> tuple[DynamicCache, CompressionReport]:
    """The cache `press` would have left after the captured prefill, and its report (no model forward needed).

    Decode from it inside `with press(model):` (new tokens are appended, never re-compressed).
    """
    if capture.spans is None or not capture.layers:
        raise ValueError("the capture is empty: run `capture_prefill(model, **inputs)` on a prompt first")
    key = capture.layers[0][1]
    plan = make_plan(press, capture.spans, key.shape[0], key.shape[1], key.device)
    cache = DynamicCache()
    start = time.perf_counter()
    for idx, (q, k, v, scaling) in enumerate(capture.layers):
        if plan.capacity < 0:
            cache.update(k, v, idx)
        else:
            cache.layers.append(compress_layer(press, plan, idx, len(capture.layers), q, k, v, scaling))
    plan.report.compression_seconds = time.perf_counter() - start
    plan.report.compressed = plan.capacity >= 0
    press.report = plan.report
    return cache, plan.report


def capture_prefill(model: nn.Module, **inputs: Any) -> tuple[PrefillCapture, Any]:
    """Run one prefill of `model` with a full cache and keep every layer's queries, keys and values.

    Returns the capture and the model output. Feed the capture to `compress_captured` for each press to compare
    many presses and budgets on one forward pass (identical to compressing inside the forward).
    """
    from .snapkv import SnapKV

    capture = PrefillCapture()
    probe = SnapKV(compression_ratio=0.0, window=0)
    with torch.no_grad(), PressSession(probe, model, capture=capture):
        out = model(**inputs, use_cache=True)
    if not capture.layers:
        raise ValueError("no prefill was seen: pass a prompt of more than one token")
    return capture, out


def compress_layer(
    press: KVPress,
    plan: _PrefillPlan,
    layer_idx: int,
    num_layers: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float,
) -> PackedLayer:
    """Score one layer's prompt entries, pack the kept ones and record them in the plan's report."""
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
    )
    with torch.no_grad():
        keep = press.keep_indices(inputs)
        packed = PackedLayer.from_dense(key, value, keep)
    bytes_before = key.numel() * key.element_size() + value.numel() * value.element_size()
    plan.report.layers.append(
        LayerStats(
            layer=layer_idx,
            tokens_before=key.shape[2],
            kept_per_head=packed.kept_per_head,
            bytes_before=bytes_before,
            bytes_after=packed.kv_bytes(),
            kept_by_modality=_kept_by_modality(packed, plan.spans),
        )
    )
    return packed


def _kept_by_modality(layer: PackedLayer, spans: ModalitySpans) -> dict[str, int]:
    labels = torch.zeros(spans.seq_len, dtype=torch.long)  # 0 = text, 1.. = modality index
    names = ["text", *sorted({s.modality for s in spans.spans})]
    for s in spans.spans:
        labels[s.start : s.end] = names.index(s.modality)
    counts = torch.bincount(labels[layer.positions.long().cpu()], minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts)}
