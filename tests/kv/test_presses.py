"""Presses on every supported model family: exact no-op, kept counts, exact decoding, memory, bad inputs."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import omnipress as op
from omnipress.adapters import UnsupportedModelError, get_adapter
from omnipress.cache import RaggedLayer, cache_kv_bytes, generated_cache
from omnipress.kv.session import capture_prefill, compress_captured
from omnipress.testing import FAMILIES, tiny_inputs, tiny_model

from . import reference_attention as ref

MEDIA = {
    "llama": {},
    "qwen2": {},
    "qwen3": {},
    "qwen2_audio": {"image": False, "audio": True},
    "qwen2_5_omni": {"image": True, "audio": True},
}


def _inputs(family, model):
    kwargs = MEDIA.get(family, {"image": True})
    return tiny_inputs(family, model, **kwargs)


def _generate(model, inputs, n=6):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=n, do_sample=False, output_logits=True, return_dict_in_generate=True
        )


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    family = request.param
    model = tiny_model(family)
    return family, model, _inputs(family, model)


def test_keep_everything_is_bit_identical(family_model):
    family, model, inputs = family_model
    base = _generate(model, inputs)
    for press in (op.SnapKV(budget=100_000), op.MixKV(op.AdaKV(compression_ratio=0.0))):
        with press(model):
            out = _generate(model, inputs)
        assert torch.equal(out.sequences, base.sequences), family
        for a, b in zip(out.logits, base.logits):
            assert torch.equal(a, b), family
        report = press.report
        assert not report.compressed and "nothing to compress" in report.note
        # a press that keeps everything reports the real counts: N -> N, 100% of every modality
        n, heads = inputs["input_ids"].shape[1], model.config.get_text_config().num_key_value_heads
        layers = len(get_adapter(model).decoder_layers)
        assert report.tokens_before == report.tokens_after == n * heads * layers
        assert report.kv_bytes_after == report.kv_bytes_before > 0 and report.logical_ratio == 0.0
        assert all(report.kept_fraction(m) == 1.0 for m in report.modality_tokens)
        assert f"KV entries  {n * heads * layers:>9} -> {n * heads * layers}, removed 0.0%" in str(report)


def test_packed_cache_that_keeps_everything_decodes_bit_identically(family_model):
    family, model, inputs = family_model
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():
        first = model(**inputs, cache=cache, use_cache=True)
    full = DynamicCache(config=model.config.get_text_config())
    packed = DynamicCache(config=model.config.get_text_config())
    for idx, layer in enumerate(cache.layers):
        full.update(layer.keys.clone(), layer.values.clone(), idx)
        packed.layers[idx] = RaggedLayer.from_dense(layer.keys, layer.values)
    nxt = first.logits[:, -1:].argmax(-1)
    positions = get_adapter(model).continuation_position_ids(inputs["input_ids"].shape[1], 1)
    step = {"input_ids": nxt, "position_ids": positions}
    with torch.no_grad():
        want = model(**step, cache=full).logits
        with op.SnapKV(budget=8, window=4)(model):
            got = model(**step, cache=packed).logits
    assert torch.equal(got, want), family


def test_compressing_press_generates_with_the_budget(family_model):
    _, model, inputs = family_model
    budget = 16
    press = op.SnapKV(budget=budget, window=4)
    with press(model):
        out = _generate(model, inputs)
    report = press.report
    n_prompt = inputs["input_ids"].shape[1]
    assert report.compressed and report.prompt_tokens == n_prompt
    assert all(k == budget for s in report.layers for k in s.kept_per_head)
    n_new = out.sequences.shape[1] - n_prompt
    for layer in generated_cache(out).layers:
        assert isinstance(layer, RaggedLayer)
        assert layer.kept_per_head == [budget + n_new - 1] * len(layer.kept_per_head)
    assert report.kv_bytes_after == sum(s.tokens_after for s in report.layers) * _entry_bytes(generated_cache(out))


def _entry_bytes(cache) -> int:
    layer = cache.layers[0]
    return (layer.keys.shape[-1] + layer.values.shape[-1]) * layer.keys.element_size()


HEADWISE = [
    op.SnapKV(budget=24, window=4),
    op.AdaKV(budget=24, window=4),
    op.PyramidKV(budget=24, window=4),
    op.MixKV(op.AdaKV(budget=20, window=4)),
    op.MixKV(op.SnapKV(budget=20, window=4)),
    op.H2O(budget=20, window=4),
]


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
@pytest.mark.parametrize("press", HEADWISE, ids=lambda p: p.name)
def test_decoding_equals_full_cache_with_evicted_entries_masked(family, press):
    """Proves positions (M-RoPE for Qwen2-VL) and the ragged attention: same logits as hiding the evicted entries."""
    model = tiny_model(family, attn_implementation="eager")
    inputs = _inputs(family, model)
    n_prompt = inputs["input_ids"].shape[1]
    with press(model):
        out = _generate(model, inputs)
    keep = ref.keep_masks_from_cache(generated_cache(out), n_prompt)
    assert any(not bool(k.all()) for k in keep.values())
    ref.install(keep)
    with ref.attention_as(model):
        want = _generate(model, inputs)
    assert torch.equal(out.sequences, want.sequences)
    for a, b in zip(out.logits, want.logits):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_question_appended_after_compression_equals_masked_reference(family):
    model = tiny_model(family)
    inputs = _inputs(family, model)
    n_prompt = inputs["input_ids"].shape[1]
    question = torch.tensor([[40, 41, 42, 43, 44]])
    press = op.MixKV(op.AdaKV(budget=24, window=4))
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad(), press(model):
        model(**inputs, cache=cache, use_cache=True)
        positions = get_adapter(model).continuation_position_ids(n_prompt, 5)
        got = model(input_ids=question, position_ids=positions, cache=cache).logits
    ref.install(ref.keep_masks_from_cache(cache, n_prompt))
    with ref.attention_as(model):
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], question], 1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        if "mm_token_type_ids" in full:
            full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(question)], 1)
        with torch.no_grad():
            want = model(**full).logits[:, -5:]
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


def test_headwise_budgets_free_real_memory():
    from omnipress.cache import cache_kept_bytes

    model = tiny_model("qwen2_vl")
    inputs = _inputs("qwen2_vl", model)
    press = op.AdaKV(budget=24, window=4)
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad(), press(model):
        model(**inputs, cache=cache, use_cache=True)
    kept = sum(sum(layer.kept_per_head) for layer in cache.layers)
    assert len({k for layer in cache.layers for k in layer.kept_per_head}) > 1  # really ragged
    assert cache_kept_bytes(cache) == kept * _entry_bytes(cache) == press.report.kv_bytes_kept
    assert press.report.kv_bytes_after == cache_kv_bytes(cache)
    segments = sum(len(layer.kept_per_head) for layer in cache.layers)
    page = cache.layers[0].page_size
    assert kept * _entry_bytes(cache) <= cache_kv_bytes(cache) < (kept + segments * page) * _entry_bytes(cache)
    n = inputs["input_ids"].shape[1]
    assert press.report.kv_bytes_before == n * segments * _entry_bytes(cache)
    assert 0.5 < press.report.physical_ratio <= press.report.logical_ratio


def test_vision_scope_keeps_all_text_and_budgets_only_vision():
    model = tiny_model("qwen2_vl")
    inputs = _inputs("qwen2_vl", model)
    press = op.SnapKV(budget=20, window=4, scope="vision")
    with press(model):
        _generate(model, inputs, n=2)
    report = press.report
    assert report.kept_fraction("text") == 1.0
    n_image = report.modality_tokens["image"]
    for stats in report.layers:
        heads = len(stats.kept_per_head)
        assert stats.kept_by_modality["image"] == (20 - 4) * heads
        assert stats.kept_by_modality["text"] == (report.prompt_tokens - n_image) * heads


def test_captured_compression_equals_in_forward_compression():
    model = tiny_model("qwen2_vl")
    inputs = _inputs("qwen2_vl", model)
    capture, _ = capture_prefill(model, **inputs)
    for press in (op.SnapKV(budget=24, window=4), op.MixKV(op.PyramidKV(budget=24, window=4))):
        cache, _ = compress_captured(press, capture)
        live = DynamicCache(config=model.config.get_text_config())
        with torch.no_grad(), press(model):
            model(**inputs, cache=live, use_cache=True)
        for a, b in zip(cache.layers, live.layers):
            assert torch.equal(a.positions, b.positions) and torch.equal(a.keys, b.keys)


def test_sparsemm_uses_the_profile_budgets(tmp_path):
    model = tiny_model("qwen2_vl")
    adapter = op.HeadProfile  # noqa: F841  (the class is public API)
    inputs = _inputs("qwen2_vl", model)
    layers = model.config.get_text_config().num_hidden_layers
    kv_heads = model.config.get_text_config().num_key_value_heads
    scores = torch.zeros(layers, kv_heads)
    scores[0, 0] = 1.0  # one "visual head" gets most of the budget
    path = tmp_path / "heads.json"
    op.HeadProfile(scores, kind="visual", model="tiny").save(path)
    press = op.SparseMM(budget=24, window=4, profile=op.HeadProfile.load(path))
    with press(model):
        _generate(model, inputs, n=2)
    first = press.report.layers[0].kept_per_head
    assert first[0] > first[1]
    bad = op.SparseMM(budget=24, window=4, profile=op.HeadProfile(torch.ones(layers + 1, kv_heads)))
    with pytest.raises(ValueError, match="layers"), bad(model):
        _generate(model, inputs, n=1)


def test_context_is_undone():
    model = tiny_model("llama")
    cfg = model.config.get_text_config()
    before = cfg._attn_implementation
    attn = model.model.layers[0].self_attn
    from omnipress.core import dispatch

    with op.SnapKV(budget=8, window=4)(model):
        assert cfg._attn_implementation.startswith("omnipress:")
        assert attn in dispatch.ROUTES and model._forward_pre_hooks
    assert cfg._attn_implementation == before
    assert attn not in dispatch.ROUTES and not model._forward_pre_hooks


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 64, "compression_ratio": 0.5}, "exactly one"),
        ({}, "exactly one"),
        ({"budget": 16, "window": 32}, "smaller than the observation window"),
        ({"compression_ratio": 1.0}, r"\[0, 1\)"),
        ({"compression_ratio": -0.1}, r"\[0, 1\)"),
        ({"budget": 0}, "positive integer"),
        ({"budget": 64, "scope": "pixels"}, "unknown scope"),
    ],
)
def test_bad_budgets_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        op.SnapKV(**kwargs)


def test_unsupported_model_names_the_supported_families():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    context = op.SnapKV(budget=8, window=4)(model)
    with pytest.raises(UnsupportedModelError, match="qwen2_vl"):
        context.__enter__()


def test_vision_scope_on_a_text_prompt_is_a_clear_error():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (1, 50))
    with pytest.raises(ValueError, match="selects no token"), op.SnapKV(budget=8, window=4, scope="vision")(model):
        model.generate(input_ids=ids, max_new_tokens=1)


def test_strict_budget_larger_than_input_is_an_error():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (1, 50))
    with pytest.raises(ValueError, match="nothing to compress"), op.SnapKV(budget=64, strict=True)(model):
        model.generate(input_ids=ids, max_new_tokens=1)


def test_right_padded_batch_is_a_clear_error():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (2, 50))
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    with pytest.raises(ValueError, match="left-padded"), op.SnapKV(budget=8, window=4)(model):
        model(input_ids=ids, attention_mask=mask)


def test_unpadded_batch_compresses_each_row():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (2, 60))
    press = op.AdaKV(budget=16, window=4)
    with press(model):
        out = _generate(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, n=3)
    layer = generated_cache(out).layers[0]
    assert layer.batch_size == 2 and len(layer.kept_per_head) == 2 * layer.num_heads
    for row in range(2):
        with press(model):
            single = _generate(model, {"input_ids": ids[row : row + 1]}, n=3)
        assert torch.equal(single.sequences[0], out.sequences[row])


def test_mixkv_needs_an_attention_host():
    with pytest.raises(ValueError, match="attention-scored host"):
        op.MixKV(op.KNorm(budget=8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        op.MixKV(op.SnapKV(budget=64), weight=1.5)


def test_mixkv_weight_zero_without_value_norm_selects_the_host_tokens():
    model = tiny_model("qwen2_vl")
    inputs = _inputs("qwen2_vl", model)
    capture, _ = capture_prefill(model, **inputs)
    for host in (op.SnapKV(budget=24, window=4), op.AdaKV(budget=24, window=4)):
        host_cache, _ = compress_captured(host, capture)
        mix_cache, _ = compress_captured(op.MixKV(host, weight=0.0, use_value_norm=False), capture)
        for a, b in zip(host_cache.layers, mix_cache.layers):
            assert torch.equal(a.positions, b.positions)


def test_mixkv_weight_one_selects_the_most_diverse_keys():
    from omnipress.kv.scoring import key_diversity

    model = tiny_model("qwen2_vl")
    inputs = _inputs("qwen2_vl", model)
    capture, _ = capture_prefill(model, **inputs)
    budget, window = 24, 4
    cache, _ = compress_captured(op.MixKV(op.SnapKV(budget=budget, window=window), weight=1.0), capture)
    for (_, keys, _, _), layer in zip(capture.layers, cache.layers):
        n = keys.shape[2]
        div = key_diversity(keys, n - window)  # (batch, kv_heads, n - window)
        want = div.sort(dim=-1, descending=True, stable=True).indices[..., : budget - window].sort(-1).values
        got = torch.stack(layer.head_positions()).view(*want.shape[:2], -1)[..., : budget - window].long()
        assert torch.equal(got, want)


@pytest.mark.parametrize("impl", ["sdpa", "flex_attention"])
def test_other_attention_kernels_decode_like_eager(impl):
    inputs = _inputs("llama", tiny_model("llama"))
    outs = {}
    for name in ("eager", impl):
        model = tiny_model("llama", attn_implementation=name)
        for press in (op.SnapKV(budget=16, window=4), op.AdaKV(budget=16, window=4)):
            with press(model):
                outs[name, press.name] = _generate(model, inputs)
    for press_name in ("SnapKV", "AdaKV"):
        a, b = outs["eager", press_name], outs[impl, press_name]
        assert torch.equal(a.sequences, b.sequences)
        for x, y in zip(a.logits, b.logits):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_generate_helper_with_an_audio_scoped_press():
    from omnipress.testing import real_speech, tiny_processor

    model = tiny_model("qwen2_audio")
    press = op.MixKV(op.SnapKV(budget=24, window=4, scope="audio"))
    result = op.generate(
        model,
        tiny_processor("qwen2_audio", model),
        text="What is said?",
        audio=real_speech(),
        press=press,
        max_new_tokens=3,
    )
    report = result.report
    assert report is press.report and report.compressed
    assert report.kept_fraction("text") == 1.0 and report.kept_fraction("audio") < 0.5
    for stats in report.layers:
        assert stats.kept_by_modality["audio"] == (24 - 4) * len(stats.kept_per_head)


def test_video_scope_on_qwen2_vl_frames():
    model = tiny_model("qwen2_vl")
    inputs = tiny_inputs("qwen2_vl", model, image=True, video_frames=4)
    press = op.AdaKV(budget=20, window=4, scope="video")
    with press(model):
        _generate(model, inputs, n=2)
    report = press.report
    assert report.kept_fraction("image") == 1.0 and report.kept_fraction("text") == 1.0
    assert 0 < report.kept_fraction("video") < 1.0


def test_use_cache_false_is_a_clear_error():
    model = tiny_model("llama")
    ids = torch.randint(5, 200, (1, 40))
    with pytest.raises(ValueError, match="use_cache=False"), op.SnapKV(budget=8, window=4)(model):
        model.generate(input_ids=ids, max_new_tokens=2, use_cache=False)


def test_meta_device_models_and_float_ids_are_refused_at_entry():
    from transformers import LlamaForCausalLM

    from omnipress.testing import tiny_config

    with torch.device("meta"):
        meta = LlamaForCausalLM(tiny_config("llama"))
    with pytest.raises(ValueError, match="meta device"), op.SnapKV(budget=8, window=4)(meta):
        pass
    model = tiny_model("llama")
    with pytest.raises(TypeError, match="integer token ids"), op.SnapKV(budget=8, window=4)(model):
        model(input_ids=torch.rand(1, 12) * 100)
