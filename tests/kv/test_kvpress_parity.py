"""Parity with NVIDIA kvpress 0.5.5: the same prompt entries kept, in every layer and KV head.

- `SnapKV(budget=b, window=32, kernel=k, pooling="avg")` vs `SnapKVPress(window_size=32, kernel_size=k)` at the
  ratio that keeps `b` entries: same window attention (the last 32 queries, causal), zero-padded average pooling
  (padding counted), GQA groups averaged, window always kept. Exact positions.
- `StreamingLLM(budget=b, sinks=4)` vs `StreamingLLMPress(n_sink=4)`: the first 4 entries plus the most recent ones.
  kvpress has no observation window here, so ours runs with `window=0` (any window would give the same set: it is
  part of the most recent entries). Exact positions.
- `KNorm(budget=b)` vs `KnormPress`: the lowest key norms, `window=0` (kvpress protects none). Exact positions,
  except where two keys have exactly the same norm: in the first layer a token id repeated in the prompt has the
  same key up to a RoPE rotation, so the same norm; kvpress's `topk` breaks such ties arbitrarily, ours towards the
  earlier position; Qwen3 normalises its keys (`k_norm`) before RoPE, so there nearly all norms tie. Swaps between
  exactly tied norms are accepted, nothing else.

kvpress 0.5.5 pins `transformers<5.3`; it is installed with `--no-deps` (see `.ci/run`) and run here through a
forward hook that supplies the `cache_position` and `past_key_values` kwargs newer transformers no longer pass to
attention layers (`shared/specs/offline_environment.md` §4.3; transformers 5.24 renamed `past_key_values` to
`cache`). Its import-time patch of the attention functions (needed only by its head-wise presses) is undone right
after import. `datasets`, imported by two unrelated kvpress presses and heavy (pyarrow, pandas), is replaced by a
stub module during the import when it is not installed.

If kvpress cannot be imported the test fails, saying how to install it; set `OMNIPRESS_SKIP_KVPRESS=1` to skip it
explicitly instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

import pytest
import torch

import omnipress as op
from omnipress.kv.session import capture_prefill, compress_captured
from omnipress.testing import tiny_inputs, tiny_model

INSTALL = (
    "pip install --no-deps kvpress==0.5.5 && pip install 'cachetools>=5.5.2,<6' 'fire>=0.6.0,<0.7' requests tqdm "
    "(kvpress pins transformers<5.3, hence --no-deps; `datasets` is stubbed by the test), as .ci/run does"
)

TEXT = (
    "Rivers carve valleys over thousands of years. Each spring the meltwater rises, carrying gravel and silt "
    "downstream, and the banks shift a little further east. Farmers who settled the floodplain learned to read "
    "the colour of the water: brown meant a storm upstream, green a calm week ahead. The old stone bridge, built "
    "by monks in the twelfth century, still stands, although its third arch was rebuilt after the great flood of "
    "1887. Children fish from its parapet in summer."
)


def import_kvpress() -> Any:
    """Import kvpress (a stub `datasets` during the import if needed) and undo its global attention patch."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    stub = None
    if "datasets" not in sys.modules and importlib.util.find_spec("datasets") is None:
        stub = types.ModuleType("datasets")
        stub.load_dataset = lambda *args, **kwargs: None
        sys.modules["datasets"] = stub
    before = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fire 0.6 imports `pipes`
            import kvpress
    finally:
        if stub is not None and sys.modules.get("datasets") is stub:
            del sys.modules["datasets"]
        ALL_ATTENTION_FUNCTIONS._local_mapping.clear()
        ALL_ATTENTION_FUNCTIONS._local_mapping.update(before)
    return kvpress


@functools.cache
def _load_kvpress() -> Any:
    try:
        return import_kvpress()
    except Exception as error:
        return error


def skip_if_requested() -> None:
    if os.environ.get("OMNIPRESS_SKIP_KVPRESS") == "1":
        pytest.skip("OMNIPRESS_SKIP_KVPRESS=1: kvpress parity skipped on request")


def need_kvpress() -> Any:
    """kvpress, or a failed test that says how to install it (a skip only with OMNIPRESS_SKIP_KVPRESS=1)."""
    skip_if_requested()
    module = _load_kvpress()
    if isinstance(module, Exception):
        pytest.fail(
            f"the kvpress parity test needs kvpress 0.5.5, which cannot be imported ({type(module).__name__}: "
            f"{module}). Install it with: {INSTALL}. To skip this test explicitly, set OMNIPRESS_SKIP_KVPRESS=1.",
            pytrace=False,
        )
    return module


def _kwargs_for_kvpress(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    """Runs before kvpress's own forward hook (same kwargs dict): transformers >= 5.3 passes neither
    `cache_position` nor (>= 5.24) `past_key_values` to attention layers; kvpress 0.5.5 reads both."""
    if "past_key_values" not in kwargs:
        kwargs["past_key_values"] = kwargs.get("cache")
    if "cache_position" not in kwargs:
        cache, n = kwargs["past_key_values"], kwargs["hidden_states"].shape[1]
        past = cache.get_seq_length(module.layer_idx) - n if cache is not None else 0  # the cache already holds them
        kwargs["cache_position"] = torch.arange(past, past + n, device=kwargs["hidden_states"].device)


def kvpress_positions(press: Any, model: torch.nn.Module, ids: torch.Tensor, full_keys: list) -> list[torch.Tensor]:
    """Per layer `(1, kv_heads, kept)` ascending positions kvpress kept, found by matching its cached keys to the
    uncompressed keys (every key vector of this prompt is distinct)."""
    hooks = [
        layer.self_attn.register_forward_hook(_kwargs_for_kvpress, with_kwargs=True, prepend=True)
        for layer in model.model.layers
    ]
    try:
        with torch.no_grad(), press(model):
            cache = model(input_ids=ids, use_cache=True).past_key_values
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for layer, keys in zip(cache.layers, full_keys):
        same = (layer.keys.unsqueeze(-2) == keys.unsqueeze(-3)).all(-1)  # (1, kv_heads, kept, N)
        assert bool((same.sum(-1) == 1).all()), "kvpress's cached keys are not a subset of the prompt's keys"
        out.append(same.float().argmax(-1).sort(-1).values)
    return out


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def prompt(request) -> tuple[torch.nn.Module, torch.Tensor, Any]:
    """A GQA model (4 query / 2 KV heads, 3 layers) and a ~500-token chat prompt of real English text."""
    skip_if_requested()
    model = tiny_model(request.param, num_hidden_layers=3)
    ids = tiny_inputs(request.param, model, question=TEXT)["input_ids"]
    capture, _ = capture_prefill(model, input_ids=ids)
    return model, ids, capture, request.param


def _ratio(n: int, kept: int) -> float:
    return 1.0 - (kept + 0.5) / n  # kvpress keeps int(n * (1 - ratio)) = kept


@pytest.mark.parametrize(("budget", "kernel"), [(64, 5), (160, 7)])
def test_snapkv_keeps_exactly_kvpress_tokens(prompt, budget: int, kernel: int) -> None:
    kvpress = need_kvpress()
    model, ids, capture, _ = prompt
    n = ids.shape[1]
    assert n > 400
    theirs = kvpress.SnapKVPress(compression_ratio=_ratio(n, budget), window_size=32, kernel_size=kernel)
    want = kvpress_positions(theirs, model, ids, [layer[1] for layer in capture.layers])
    cache, _ = compress_captured(op.SnapKV(budget=budget, window=32, kernel=kernel, pooling="avg"), capture)
    for idx, layer in enumerate(cache.layers):
        got = torch.stack([p.long() for p in layer.head_positions()]).view(want[idx].shape)
        assert torch.equal(got, want[idx]), f"layer {idx}: {int((got != want[idx]).sum())} positions differ"


def test_streaming_llm_keeps_exactly_kvpress_tokens(prompt) -> None:
    kvpress = need_kvpress()
    model, ids, capture, _ = prompt
    n, budget = ids.shape[1], 96
    want = kvpress_positions(
        kvpress.StreamingLLMPress(compression_ratio=_ratio(n, budget), n_sink=4),
        model,
        ids,
        [layer[1] for layer in capture.layers],
    )
    cache, _ = compress_captured(op.StreamingLLM(budget=budget, sinks=4), capture)
    expected = torch.cat([torch.arange(4), torch.arange(n - budget + 4, n)])
    for idx, layer in enumerate(cache.layers):
        got = torch.stack([p.long() for p in layer.head_positions()]).view(want[idx].shape)
        assert torch.equal(got, want[idx]), f"layer {idx}"
        assert torch.equal(got[0, 0], expected)


def test_knorm_keeps_exactly_kvpress_tokens(prompt) -> None:
    kvpress = need_kvpress()
    model, ids, capture, family = prompt
    n, budget = ids.shape[1], 128
    keys = [layer[1] for layer in capture.layers]
    want = kvpress_positions(kvpress.KnormPress(compression_ratio=_ratio(n, budget)), model, ids, keys)
    cache, _ = compress_captured(op.KNorm(budget=budget), capture)
    exact_layers = 0
    for idx, layer in enumerate(cache.layers):
        got = torch.stack([p.long() for p in layer.head_positions()]).view(want[idx].shape)
        norms = torch.linalg.vector_norm(keys[idx].float(), dim=-1)  # (1, kv_heads, N), as both libraries score
        for h in range(got.shape[1]):
            ours, theirs = set(got[0, h].tolist()), set(want[idx][0, h].tolist())
            swapped = sorted(ours ^ theirs)
            assert len(ours) == len(theirs) == budget
            assert not swapped or len(set(norms[0, h, swapped].tolist())) == 1, (
                f"layer {idx} head {h}: kept {sorted(ours - theirs)} instead of {sorted(theirs - ours)} "
                "(not a tie in the key norm)"
            )
        exact_layers += int(torch.equal(got, want[idx]))
    if family == "llama":  # ties only where keys repeat up to a rotation: the first layer
        assert exact_layers >= len(cache.layers) - 1
