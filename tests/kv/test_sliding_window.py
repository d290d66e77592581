"""Sliding-window layers (Qwen2 `use_sliding_window`): honoured, never silently dropped."""

from __future__ import annotations

import torch

import omnipress as op
from omnipress.cache import RaggedLayer, generated_cache
from omnipress.testing import tiny_model

from . import reference_attention as ref


def test_sliding_layers_keep_their_window_and_decode_exactly():
    model = tiny_model(
        "qwen2", attn_implementation="eager", use_sliding_window=True, sliding_window=12, max_window_layers=1
    )
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    ids = torch.randint(5, 200, (1, 50), generator=torch.Generator().manual_seed(0))
    press = op.AdaKV(budget=16, window=4)
    kwargs = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "output_logits": True}
    with torch.no_grad(), press(model):
        out = model.generate(input_ids=ids, return_dict_in_generate=True, **kwargs)
    cache = generated_cache(out)
    assert isinstance(cache.layers[0], RaggedLayer) and not isinstance(cache.layers[1], RaggedLayer)
    assert "layer 1 uses sliding-window attention" in press.report.note
    compressed, sliding = press.report.layers
    assert compressed.tokens_after < compressed.tokens_before and sliding.tokens_after == sliding.tokens_before
    ragged_only = type(cache)()
    ragged_only.layers = [cache.layers[0]]
    ref.install(ref.keep_masks_from_cache(ragged_only, 50))  # layer 1: transformers' own sliding mask
    with ref.attention_as(model), torch.no_grad():
        want = model.generate(input_ids=ids, return_dict_in_generate=True, **kwargs)
    assert torch.equal(out.sequences, want.sequences)
    for a, b in zip(out.logits, want.logits):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_a_ragged_layer_in_a_sliding_layer_applies_the_window():
    """A ragged cache that holds every column, handed to a sliding-window layer, attends only inside the window
    (from its stored columns): the result equals transformers' own sliding cache."""
    from transformers import DynamicCache

    model = tiny_model("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=0)
    ids = torch.randint(5, 200, (1, 30), generator=torch.Generator().manual_seed(1))
    step = {"input_ids": torch.tensor([[9]]), "position_ids": torch.tensor([[30]])}
    with torch.no_grad():
        sliding = DynamicCache(config=model.config)  # transformers keeps only the last window - 1 columns
        model(input_ids=ids, cache=sliding, use_cache=True)
        want = model(**step, cache=sliding).logits
        everything = DynamicCache()  # plain layers: all 30 columns
        model(input_ids=ids, cache=everything, use_cache=True)
        ragged = DynamicCache()
        ragged.layers = [RaggedLayer.from_dense(layer.keys, layer.values) for layer in everything.layers]
        assert ragged.layers[0].max_length == 30
        with op.SnapKV(budget=8, window=4)(model):
            got = model(**step, cache=ragged).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
