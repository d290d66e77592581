"""Whisper under every KV press: the cross-attention cache's entries are evicted per head (counted over the positions
that hold audio, not the 30 s padding), 5-beam search decodes, compression 0 is bit-identical to the untouched
model, and the real tiny.en still transcribes."""

from __future__ import annotations

import math

import pytest
import torch
import transformers as T

import omnipress as op
from omnipress.cache import RaggedLayer
from omnipress.testing import real_speech, tiny_model, whisper_decoder_prompt, whisper_inputs

from .asr.real import needs_speech, needs_weights, whisper_tiny_en_cached

PRESSES = {
    "snapkv": lambda c: op.SnapKV(compression_ratio=c),
    "adakv": lambda c: op.AdaKV(compression_ratio=c),
    "pyramidkv": lambda c: op.PyramidKV(compression_ratio=c),
    "h2o": lambda c: op.H2O(compression_ratio=c),
    "streamingllm": lambda c: op.StreamingLLM(compression_ratio=c),
    "mixkv": lambda c: op.MixKV(op.SnapKV(compression_ratio=c)),
    "audiokv": lambda c: op.AudioKV(compression_ratio=c),
}


@pytest.fixture(scope="module")
def whisper():
    model = tiny_model("whisper")
    inputs = whisper_inputs(model, [real_speech()])
    audio = math.ceil(int(inputs["attention_mask"].sum()) / 2)  # encoder positions holding audio
    return model, {k: v for k, v in inputs.items() if k != "decoder_input_ids"}, audio


@pytest.fixture(scope="module")
def vanilla(whisper):
    model, inputs, _ = whisper
    return _generate(model, inputs)[0]


def _generate(model, inputs, press=None, **kwargs):
    # language given: the tiny multilingual model then skips language detection (one more encoder pass)
    kwargs = {"num_beams": 5, "max_new_tokens": 4, "do_sample": False, "language": "en", **kwargs}
    holder = {}

    def grab(module, args, kw):
        holder["cache"] = kw.get("cache", kw.get("past_key_values"))

    handle = model.model.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            if press is None:
                out = model.generate(**inputs, return_dict_in_generate=True, output_scores=True, **kwargs)
            else:
                with press(model):
                    out = model.generate(**inputs, return_dict_in_generate=True, output_scores=True, **kwargs)
    finally:
        handle.remove()
    return out, holder["cache"]


@pytest.mark.parametrize("name", list(PRESSES))
def test_every_press_evicts_cross_attention_entries_under_beam_search(whisper, name):
    model, inputs, audio = whisper
    press = PRESSES[name](0.5)
    out, cache = _generate(model, inputs, press)
    assert out.sequences.shape[0] == 1 and out.sequences.shape[1] > 1
    report = press.report
    assert report.compressed and report.modality_tokens["audio"] == 5 * audio  # 5 beams, each its clip's audio
    cross = cache.cross_attention_cache.layers
    assert all(isinstance(layer, RaggedLayer) for layer in cross)
    heads = model.config.decoder_attention_heads
    # the ratio counts audio positions: half of each beam's audio entries are kept (over all heads and layers;
    # PyramidKV moves budget between layers, AdaKV between heads)
    kept_audio = sum(stats.kept_by_modality["audio"] for stats in report.layers)
    # the 30 s padding is kept whole and reported as padding (not as text: a cross-attention cache holds no text)
    assert all(set(stats.kept_by_modality) == {"audio", "padding"} for stats in report.layers)
    assert report.kept_fraction("padding") == 1.0
    assert kept_audio == pytest.approx(len(cross) * 5 * heads * int(audio * 0.5), abs=len(cross) * 5 * heads)
    for layer in cross:
        for positions in layer.head_positions():
            assert bool((positions[:-1] < positions[1:]).all())  # ascending, no duplicate
    assert not any(isinstance(layer, RaggedLayer) for layer in cache.self_attention_cache.layers)


@pytest.mark.parametrize("name", ["adakv", "audiokv"])
def test_head_wise_cross_attention_layers_hold_less_than_the_untouched_cache(whisper, name):
    """Cross-attention layers never grow, so their ragged capacity is rounded to small pages
    (`kv.cross.CROSS_PAGE_SIZE`), or is one capacity for every head when that wastes at most
    `CROSS_EQUAL_CAPACITY_SLACK` of the kept entries: the physical bytes fall below the untouched 1500-entry cache
    even though the padding is kept."""
    from omnipress.kv.cross import CROSS_EQUAL_CAPACITY_SLACK, CROSS_PAGE_SIZE

    model, inputs, _ = whisper
    _, cache = _generate(model, inputs, PRESSES[name](0.5))
    for layer in cache.cross_attention_cache.layers:
        spare = [c - n for c, n in zip(layer.capacities, layer.host_lengths)]
        if layer.page_size == CROSS_PAGE_SIZE:
            assert max(spare) < CROSS_PAGE_SIZE
        else:
            assert layer.equal_capacity and sum(spare) <= CROSS_EQUAL_CAPACITY_SLACK * sum(layer.host_lengths)
        dense = layer.batch_size * layer.num_heads * 1500 * 2 * layer.keys.shape[-1] * layer.keys.element_size()
        assert layer.kv_bytes() < dense


@pytest.mark.parametrize("name", ["adakv", "audiokv"])
def test_one_capacity_layout_decodes_like_the_paged_layout(whisper, name, monkeypatch):
    """Head-wise budgets laid out with one capacity per layer decode through the model's attention kernel with the
    empty slots masked; the result equals the paged ragged path's (beam search included)."""
    import omnipress.kv.cross as cross

    model, inputs, _ = whisper
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
    importance = torch.rand(layers, heads, generator=torch.Generator().manual_seed(0)) ** 2
    profile = op.HeadProfile(importance, kind="audio_heads")  # head-wise budgets for AudioKV
    make = {"adakv": PRESSES["adakv"], "audiokv": lambda c: op.AudioKV(compression_ratio=c, profile=profile)}[name]
    import omnipress.core.dispatch as dispatch

    paged = []
    real = dispatch.ragged_attention
    monkeypatch.setattr(dispatch, "ragged_attention", lambda *a, **k: paged.append(1) or real(*a, **k))
    runs = {}
    for slack in (1.0, -1.0):  # always one capacity / never
        monkeypatch.setattr(cross, "CROSS_EQUAL_CAPACITY_SLACK", slack)
        paged.clear()
        out, cache = _generate(model, inputs, make(0.5))
        layers = cache.cross_attention_cache.layers
        assert all(isinstance(layer, RaggedLayer) and not layer.is_uniform for layer in layers)
        assert all(layer.equal_capacity == (slack > 0) for layer in layers)
        assert bool(paged) == (slack < 0)  # one capacity: the model's kernel, never the paged path
        runs[slack] = out
    assert torch.equal(runs[1.0].sequences, runs[-1.0].sequences)
    for a, b in zip(runs[1.0].scores, runs[-1.0].scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["snapkv", "adakv"])
def test_compression_zero_is_bit_identical(whisper, vanilla, name):
    model, inputs, _ = whisper
    press = PRESSES[name](0.0)
    got, cache = _generate(model, inputs, press)
    assert torch.equal(got.sequences, vanilla.sequences)
    assert all(torch.equal(a, b) for a, b in zip(got.scores, vanilla.scores))
    assert not press.report.compressed
    assert not any(isinstance(layer, RaggedLayer) for layer in cache.cross_attention_cache.layers)


@pytest.mark.parametrize("name", ["snapkv", "h2o"])
def test_kept_entries_are_the_most_attended_audio_positions(whisper, name):
    """Brute force: the decoder prompt's cross-attention probabilities (eager `output_attentions`), averaged over
    the prompt's queries, ranked over the audio positions, give each head's kept set."""
    model, inputs, audio = whisper
    prompt = torch.tensor([whisper_decoder_prompt()])
    model.set_attn_implementation("eager")  # the only kernel that returns attention probabilities
    try:
        with torch.no_grad():
            plain = model(**inputs, decoder_input_ids=prompt, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    press = op.SnapKV(compression_ratio=0.6, kernel=1) if name == "snapkv" else op.H2O(compression_ratio=0.6)
    cache = T.EncoderDecoderCache(T.DynamicCache(), T.DynamicCache())
    with torch.no_grad(), press(model):
        model(**inputs, decoder_input_ids=prompt, cache=cache, use_cache=True)
    keep = int(audio * 0.4)
    for layer_idx, probs in enumerate(plain.cross_attentions):  # (1, heads, q, 1500)
        scores = probs[0].mean(1)[:, :audio]  # (heads, audio)
        ragged = cache.cross_attention_cache.layers[layer_idx]
        for head, positions in enumerate(ragged.head_positions()):
            audio_kept = positions[positions < audio]
            want = scores[head].topk(keep).indices.sort().values
            assert torch.equal(audio_kept.long(), want), (layer_idx, head)


def test_decode_budget_is_refused_on_whisper(whisper):
    model, inputs, _ = whisper
    with pytest.raises(ValueError, match="cross-attention"):
        _generate(model, inputs, op.SnapKV(compression_ratio=0.5, decode_budget=64))


@needs_weights
@needs_speech
def test_real_whisper_beam_search_under_presses():
    """Real tiny.en, 5 beams, a recorded human voice: compression 0 gives the untouched model's tokens; SnapKV at
    40% keeps the transcript and holds fewer cross-attention bytes."""
    from omnipress.asr import load_audio, read_manifest, transcribe, word_error_rate

    from .asr.real import SPEECH

    model, processor = whisper_tiny_en_cached()
    item = next(i for i in read_manifest(SPEECH / "manifest.jsonl") if i.key == "Front_Center.wav")
    audio = load_audio(item)
    full = transcribe(model, processor, audio, num_beams=5, max_new_tokens=8)
    same = transcribe(model, processor, audio, method=op.SnapKV(compression_ratio=0.0), num_beams=5, max_new_tokens=8)
    assert same.token_ids == full.token_ids and word_error_rate([item.text], [full.text]).wer == 0.0
    press = op.SnapKV(compression_ratio=0.4)
    got = transcribe(model, processor, audio, method=press, num_beams=5, max_new_tokens=8)
    assert press.report.compressed and got.cross_kv_bytes < full.cross_kv_bytes
    assert word_error_rate([item.text], [got.text]).wer == 0.0, got.text


def test_cross_page_size_picks_one_capacity_only_when_it_wastes_little():
    from omnipress.kv.budgets import RaggedIndices
    from omnipress.kv.cross import CROSS_PAGE_SIZE, cross_page_size

    def keep(lengths):
        lengths = torch.tensor([lengths])
        return RaggedIndices(torch.zeros(int(lengths.sum()), dtype=torch.long), lengths)

    assert cross_page_size(keep([1400, 1410, 1420])) == 1424  # 54 empty slots for 4230 entries: one capacity
    assert cross_page_size(keep([700, 1000, 1300])) == CROSS_PAGE_SIZE  # 900 empty slots: paged
    assert cross_page_size(torch.zeros(1, 3, 5, dtype=torch.long)) == CROSS_PAGE_SIZE  # uniform: a dense view anyway
