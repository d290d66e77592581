"""Encoder-decoder caches (Whisper): ragged cross-attention layers are attended exactly, reordered for beams and
counted; the decoder's self-attention is routed like any decoder's."""

from __future__ import annotations

import torch
from transformers import AttentionInterface, DynamicCache, EncoderDecoderCache

from omnipress.cache import RaggedLayer, cache_kept_bytes, cache_kv_bytes
from omnipress.core import ModelSession
from omnipress.testing import tiny_inputs, tiny_model

from ..kv import reference_attention as ref
from .test_methods import AttentionRecorder

REF = "omnipress_test_cross_reference"


def _keep(bsz, heads, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randperm(n, generator=g)[: int(torch.randint(50, n, (1,), generator=g))].sort().values
        for _ in range(bsz * heads)
    ]


def test_ragged_cross_attention_decodes_like_the_full_cache_with_the_rest_hidden():
    model = tiny_model("whisper", attn_implementation="eager")
    inputs = tiny_inputs("whisper", model)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        model(**inputs, cache=cache, use_cache=True)
    cross = cache.cross_attention_cache
    keys = [layer.keys.clone() for layer in cross.layers]
    values = [layer.values.clone() for layer in cross.layers]
    bsz, heads, n, _ = keys[0].shape
    keeps = [_keep(bsz, heads, n, seed=i) for i in range(len(keys))]
    step = {"decoder_input_ids": torch.tensor([[65, 66, 67]])}  # several queries: cross-attention is not causal
    step_inputs = {k: v for k, v in inputs.items() if k != "decoder_input_ids"}

    ragged = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        model(**inputs, cache=ragged, use_cache=True)
    for idx in range(len(keys)):
        ragged.cross_attention_cache.layers[idx] = RaggedLayer.from_dense(keys[idx], values[idx], keeps[idx])
    assert cache_kept_bytes(ragged) < cache_kv_bytes(cache)
    with torch.no_grad(), AttentionRecorder()(model):
        assert ModelSession.active_on(model).adapter.cross_attention_modules
        got = model(**step_inputs, decoder_input_ids=step["decoder_input_ids"], cache=ragged).logits

    def reference(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        logits = (query @ key.transpose(-1, -2)) * scaling  # (batch, heads, q, kv)
        if module in cross_modules:  # hide the evicted encoder positions
            hidden = torch.ones(bsz, heads, n, dtype=torch.bool)
            for seg, ix in enumerate(keeps[module.layer_idx]):
                hidden[seg // heads, seg % heads, ix] = False
            logits = logits.masked_fill(hidden.unsqueeze(2), float("-inf"))
        elif attention_mask is not None:
            logits = logits + attention_mask
        return (logits.softmax(-1) @ value).transpose(1, 2).contiguous(), None

    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    from omnipress.adapters import get_adapter

    cross_modules = set(get_adapter(model).cross_attention_modules)
    AttentionInterface.register(REF, reference)
    AttentionMaskInterface.register(REF, eager_mask)  # the decoder's causal mask over the new tokens
    with ref.attention_as(model, REF), torch.no_grad():
        want = model(**step_inputs, decoder_input_ids=step["decoder_input_ids"], cache=cache).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_beam_reorder_moves_ragged_cross_layers_with_their_rows():
    model = tiny_model("whisper")
    inputs = tiny_inputs("whisper", model)
    inputs = {k: v.repeat(3, *[1] * (v.dim() - 1)) for k, v in inputs.items()}  # three identical beams
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        model(**inputs, cache=cache, use_cache=True)
    layer = cache.cross_attention_cache.layers[0]
    bsz, heads, n, _ = layer.keys.shape
    keep = _keep(1, heads, n) * bsz  # the beams of one prompt share one selection
    ragged = RaggedLayer.from_dense(layer.keys, layer.values, keep)
    before = [t.clone() for t in ragged.segments()[0]]
    cache.cross_attention_cache.layers[0] = ragged
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    after = ragged.segments()[0]
    for row, src in enumerate([2, 0, 0]):
        for h in range(heads):
            assert torch.equal(after[row * heads + h], before[src * heads + h])
