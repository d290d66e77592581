"""Batched and beam generation under every press: per-row spans and budgets, padding never kept, exact decoding."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.cache import RaggedLayer, generated_cache
from omnipress.testing import tiny_batch_inputs, tiny_inputs, tiny_model

from . import reference_attention as ref

PROMPTS = {
    "llama": [
        {"question": "Hello there, how are you doing today? Tell me everything."},
        {"question": "Hi!"},
        {"question": "What is the capital of France, and why is it that city? " * 2},
    ],
    "qwen2_vl": [
        {"image": True, "question": "What is shown?"},
        {"image": False, "question": "Tell me a long story about cats and dogs."},
        {"image": True, "video_frames": 4, "question": "Compare them."},
    ],
}

PRESSES = [
    op.SnapKV(budget=20, window=4),
    op.AdaKV(budget=20, window=4),
    op.PyramidKV(budget=20, window=4),
    op.MixKV(op.AdaKV(budget=20, window=4)),
    op.H2O(budget=20, window=4),
    op.StreamingLLM(budget=20, window=4),
    op.KNorm(budget=20, window=4),
    op.RandomPress(budget=20, window=4),
    op.SnapKV(compression_ratio=0.6, window=4),
]


def _generate(model, inputs, n=5, **kwargs):
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )


@pytest.fixture(scope="module", params=["llama", "qwen2_vl"])
def batch_case(request):
    family = request.param
    model = tiny_model(family)
    prompts = PROMPTS[family]
    return family, model, tiny_batch_inputs(family, model, prompts), [tiny_inputs(family, model, **p) for p in prompts]


@pytest.mark.parametrize("press", PRESSES, ids=lambda p: f"{p.name}-{p.budget_config.budget}")
def test_padded_batch_equals_each_prompt_alone(batch_case, press):
    _family, model, batch, singles = batch_case
    with press(model):
        out = _generate(model, batch)
    batch_report = press.report
    width = batch["input_ids"].shape[1]
    cache = generated_cache(out)
    for row, single in enumerate(singles):
        with press(model):
            alone = _generate(model, single)
        assert torch.equal(out.sequences[row, width:], alone.sequences[0, single["input_ids"].shape[1] :]), row
        for a, b in zip(out.logits, alone.logits):
            torch.testing.assert_close(a[row], b[0], atol=1e-4, rtol=1e-4)
        pad = width - single["input_ids"].shape[1]
        heads = cache.layers[0].num_heads
        alone_cache = generated_cache(alone)
        for layer, single_layer in zip(cache.layers, alone_cache.layers):
            if not isinstance(layer, RaggedLayer):
                continue
            for h in range(heads):
                kept = layer.head_positions()[row * heads + h].long()
                assert bool((kept >= pad).all())  # padding never kept
                assert torch.equal(kept - pad, single_layer.head_positions()[h].long())  # the row's own selection
    assert batch_report.row_tokens == [int(s["attention_mask"].sum()) for s in singles]
    assert batch_report.prompt_tokens == sum(batch_report.row_tokens)
    assert batch_report.kv_bytes_before == sum(s.bytes_before for s in batch_report.layers)
    per_entry = batch_report.kv_bytes_before // (sum(batch_report.row_tokens) * 2 * len(batch_report.layers))
    assert batch_report.kv_bytes_kept == batch_report.tokens_after * per_entry  # padding not counted


def test_media_scope_budgets_each_row_on_its_own_spans():
    model = tiny_model("qwen2_vl")
    prompts = PROMPTS["qwen2_vl"]
    batch = tiny_batch_inputs("qwen2_vl", model, prompts)
    press = op.SnapKV(budget=20, window=4, scope="vision")
    with press(model):
        _generate(model, batch, n=2)
    report = press.report
    assert report.kept_fraction("text") == 1.0
    layer = report.layers[0]
    heads = 2
    media_rows = [p.get("image", False) or p.get("video_frames", 0) for p in prompts]
    per_row = [sum(layer.kept_per_head[r * heads : (r + 1) * heads]) // heads for r in range(3)]
    text_rows = [report.row_tokens[r] for r in range(3)]
    for r in range(3):
        if media_rows[r]:
            assert per_row[r] < text_rows[r]  # media of this row compressed to the budget
        else:
            assert per_row[r] == text_rows[r]  # nothing in scope: the whole row kept


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
@pytest.mark.parametrize(
    "press",
    [op.SnapKV(budget=20, window=4), op.AdaKV(budget=20, window=4), op.MixKV(op.PyramidKV(budget=20, window=4))],
    ids=lambda p: p.name,
)
def test_beam_search_equals_the_masked_full_cache(family, press):
    """Beams reorder the ragged segments; the result equals beam search over the full cache with the evicted
    entries hidden from every new token."""
    model = tiny_model(family, attn_implementation="eager")
    batch = tiny_batch_inputs(family, model, PROMPTS[family][:2])
    kwargs = {"num_beams": 3, "num_return_sequences": 2, "output_scores": True}
    with press(model):
        out = _generate(model, batch, **kwargs)
    assert press.report.batch_size == 6  # two prompts x three beams, compressed once per prompt
    cache = generated_cache(out)
    keep = ref.keep_masks_from_cache(cache, batch["input_ids"].shape[1])
    assert any(not bool(k.all()) for k in keep.values())
    ref.install(keep)
    with ref.attention_as(model):
        want = _generate(model, batch, **kwargs)
    assert torch.equal(out.sequences, want.sequences)
    for a, b in zip(out.scores, want.scores):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_beams_of_one_prompt_share_one_selection():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (1, 60), generator=torch.Generator().manual_seed(0))
    press = op.AdaKV(budget=16, window=4)
    with press(model):
        out = _generate(model, {"input_ids": ids}, num_beams=4)
    layer = generated_cache(out).layers[0]
    heads = layer.num_heads
    positions = [p[:16].tolist() for p in layer.head_positions()]
    for beam in range(1, 4):
        assert positions[beam * heads : (beam + 1) * heads] == positions[:heads]
