"""AudioKV wiring on real tiny audio LLMs (Qwen2-Audio, Qwen2.5-Omni thinker, Whisper) with real speech.

Selections are checked against a brute-force reference written from the definition (window attention in loops,
explicit-DFT smoothing, HeadKV budgets from the formula); every knob must change the selection; keep-everything
settings are bit-identical to the untouched model; the evicted entries really leave memory.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import omnipress as op
from omnipress.cache import cache_kept_bytes, generated_cache
from omnipress.kv.base import LayerInputs
from omnipress.kv.budgets import RaggedIndices, adakv_capacities
from omnipress.kv.session import capture_prefill, compress_captured
from omnipress.kv.spectral import headkv_capacities
from omnipress.testing import tiny_inputs, tiny_model

from .test_spectral import brute_even, brute_smooth
from .test_wiring import pool, snapkv_ref

WINDOW = 4


@functools.cache
def audio_prefill(family: str = "qwen2_audio"):
    model = tiny_model(family, initializer_range=0.1)
    inputs = tiny_inputs(family, model, audio=True)
    capture, _ = capture_prefill(model, **inputs)
    return model, inputs, capture


def layer_inputs(capture, press: op.KVPress, layer_idx: int) -> LayerInputs:
    """LayerInputs of a single prompt, built from the budget conventions (scope audio: audio outside the window is
    evictable, everything else protected)."""
    q, k, v, scaling = capture.layers[layer_idx]
    n = k.shape[2]
    cfg = press.budget_config
    audio = capture.spans.mask("audio")
    in_window = torch.arange(n) >= n - cfg.window
    scope = audio if cfg.scope == "audio" else torch.ones(n, dtype=torch.bool)
    candidates = scope & ~in_window
    capacity = int(int(scope.sum()) * (1 - cfg.compression_ratio)) - int((scope & in_window).sum())
    return LayerInputs(
        layer_idx=layer_idx,
        num_layers=len(capture.layers),
        query=q,
        keys=k,
        values=v,
        scaling=scaling,
        window=cfg.window,
        candidates=candidates,
        protected=~candidates,
        capacity=max(0, capacity),
        spans=[capture.spans],
    )


def lists(keep) -> list[list[int]]:
    if isinstance(keep, RaggedIndices):
        return [h.tolist() for h in keep[0]]
    return keep[0].tolist()


def reference_scores(capture, layer_idx: int, *, kernel: int, alpha: float, keep: float, taper: float) -> torch.Tensor:
    """(kv_heads, N - window) AudioKV scores of one prompt: loops for the window attention, explicit DFT for SSS."""
    q, k, _, scaling = capture.layers[layer_idx]
    raw = snapkv_ref(q[0].double(), k[0].double(), scaling, WINDOW, 1, "avg")  # per KV head, N - window values
    out = []
    span = capture.spans.of("audio")[0]
    limit = k.shape[2] - WINDOW
    for head in raw:
        scores = pool(head, kernel, "avg")
        end = min(span.end, limit)
        smooth = brute_smooth(torch.tensor([head[span.start : end]]), alpha=alpha, keep=keep, taper=taper)[0]
        scores[span.start : end] = smooth.tolist()
        out.append(scores)
    return torch.tensor(out)


def profile_for(capture, seed: int = 0) -> op.HeadProfile:
    g = torch.Generator().manual_seed(seed)
    layers, heads = len(capture.layers), capture.layers[0][1].shape[1]
    return op.HeadProfile(torch.rand(layers, heads, generator=g) ** 2, kind="audio_heads", model="tiny")


@pytest.mark.parametrize("layer_idx", [0, 1])
@pytest.mark.parametrize(("alpha", "keep", "kernel"), [(0.8, 0.1, 5), (1.0, 0.3, 3), (0.0, 0.1, 1)])
def test_scores_and_selection_equal_the_brute_force_reference(layer_idx, alpha, keep, kernel):
    _, _, capture = audio_prefill()
    press = op.AudioKV(compression_ratio=0.5, window=WINDOW, alpha=alpha, keep=keep, kernel=kernel, coverage=0.0)
    inputs = layer_inputs(capture, press, layer_idx)
    want = reference_scores(capture, layer_idx, kernel=kernel, alpha=alpha, keep=keep, taper=0.5)
    got = press.score(inputs)[0, :, : want.shape[1]]
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-4)
    keep_lists = lists(press.keep_indices(inputs))
    protected = (~inputs.candidates[0, 0]).nonzero().flatten().tolist()
    capacity = int(inputs.capacity[0])
    for head, kept in enumerate(keep_lists):
        cand = inputs.candidates[0, 0].nonzero().flatten().tolist()
        ranked = sorted(cand, key=lambda i: (-float(want[head, i]), i))[:capacity]
        assert sorted(kept) == sorted(protected + ranked) or _near_tie(want[head], kept, protected, ranked)


@pytest.mark.parametrize(("coverage", "profiled"), [(0.75, False), (0.3, True), (1.0, True)])
def test_coverage_spreads_its_share_of_each_head_budget_evenly_over_the_audio(coverage, profiled):
    _, _, capture = audio_prefill()
    profile = profile_for(capture, seed=2) if profiled else None
    press = op.AudioKV(compression_ratio=0.7, window=WINDOW, coverage=coverage, profile=profile, beta=1.5)
    inputs = layer_inputs(capture, press, 1)
    scores = press.score(inputs)[0]
    budgets = press.capacities(inputs, press.score(inputs))[0].tolist()
    protected = (~inputs.candidates[0, 0]).nonzero().flatten().tolist()
    cand_mask = inputs.candidates[0, 0].tolist()
    cand = [i for i, c in enumerate(cand_mask) if c]
    for head, kept in enumerate(lists(press.keep_indices(inputs))):
        spread = brute_even(cand_mask, round(coverage * budgets[head]))  # scope="audio": every candidate is audio
        rest = [i for i in cand if i not in spread]
        ranked = sorted(rest, key=lambda i: (-float(scores[head, i]), i))[: budgets[head] - len(spread)]
        assert set(spread) <= set(kept)
        assert sorted(kept) == sorted(protected + spread + ranked) or _near_tie(
            scores[head], kept, protected + spread, ranked
        )


def _near_tie(scores, kept, protected, ranked) -> bool:
    got = set(kept) - set(protected)
    if len(got) != len(ranked):
        return False
    worst_got = min(float(scores[i]) for i in got)
    best_missing = max((float(scores[i]) for i in set(ranked) - got), default=-math.inf)
    return abs(worst_got - best_missing) <= 1e-5 * max(1e-12, abs(best_missing))


def test_headkv_budgets_follow_the_profile_and_sum_to_the_layer_total():
    _, _, capture = audio_prefill()
    profile = profile_for(capture)
    for layer_idx in range(len(capture.layers)):
        press = op.AudioKV(compression_ratio=0.6, window=WINDOW, profile=profile, beta=1.5)
        inputs = layer_inputs(capture, press, layer_idx)
        kept = lists(press.keep_indices(inputs))
        n_protected = int((~inputs.candidates).sum())
        budgets = [len(h) - n_protected for h in kept]
        base, heads = int(inputs.capacity[0]), len(kept)
        n_cand = int(inputs.candidates.sum())
        assert sum(budgets) == heads * base and all(1 <= b <= n_cand for b in budgets)
        want = headkv_capacities(profile.scores[layer_idx], base, beta=1.5, upper=n_cand)
        assert budgets == want.tolist()
        window = list(range(k_len(capture) - WINDOW, k_len(capture)))
        text = (~capture.spans.mask("audio")).nonzero().flatten().tolist()
        assert all(set(window) | set(text) <= set(h) for h in kept)  # window and protected text always kept


def k_len(capture) -> int:
    return capture.layers[0][1].shape[2]


def test_dynamic_allocation_is_adakv_on_profile_weighted_scores():
    _, _, capture = audio_prefill()
    profile = profile_for(capture, seed=1)
    press = op.AudioKV(compression_ratio=0.5, window=WINDOW, profile=profile, allocation="dynamic", lam=2.0)
    inputs = layer_inputs(capture, press, 1)
    scores = press.score(inputs)
    weight = 1 + 2.0 * profile.scores[1] / profile.scores.max()
    want = adakv_capacities(scores * weight.view(1, -1, 1), int(inputs.capacity[0]), candidates=inputs.candidates)
    assert torch.equal(press.capacities(inputs, scores), want)


def test_plug_in_smooths_the_host_scores_and_keeps_its_budgets():
    _, _, capture = audio_prefill()
    host = op.AdaKV(compression_ratio=0.5, window=WINDOW, scope="audio")
    press = op.AudioKV(host=host, alpha=1.0, keep=0.2)
    assert press.budget_config == host.budget_config and press.name == "AudioKV(AdaKV)"
    inputs = layer_inputs(capture, press, 0)
    host_scores = host.score(inputs)
    span = capture.spans.of("audio")[0]
    want = host_scores.clone()
    want[0, :, span.start : span.end] = brute_smooth(
        host_scores[0, :, span.start : span.end], alpha=1.0, keep=0.2, taper=0.5
    )
    got = press.score(inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert torch.equal(press.capacities(inputs, got), host.capacities(inputs, got))
    assert lists(press.keep_indices(inputs)) != lists(host.keep_indices(inputs))
    with pytest.raises(ValueError, match="host"):
        op.AudioKV(host=host, compression_ratio=0.3)
    with pytest.raises(ValueError, match="SnapKV-family"):
        op.AudioKV(host=op.StreamingLLM(budget=8))


def test_scope_all_still_protects_markers_and_sinks_within_the_budget():
    _, _, capture = audio_prefill()
    press = op.AudioKV(compression_ratio=0.5, window=WINDOW, scope="all", sinks=3)
    inputs = layer_inputs(capture, press, 0)
    kept = lists(press.keep_indices(inputs))
    span = capture.spans.of("audio")[0]
    must = {0, 1, 2, span.start - 1, span.end}
    assert all(must <= set(h) for h in kept)
    n = k_len(capture)
    total = WINDOW + int(inputs.capacity[0])
    assert all(len(h) == total for h in kept)  # the markers and sinks come out of the budget
    plain = lists(op.AudioKV(compression_ratio=0.5, window=WINDOW, scope="all").keep_indices(inputs))
    assert plain != kept and n > total


# -- each knob changes the selection ------------------------------------------------------------------------------
KNOBS = {
    "alpha": ({"alpha": 0.0}, {"alpha": 1.0}),
    "keep": ({"keep": 0.05, "alpha": 1.0}, {"keep": 0.5, "alpha": 1.0}),
    "cutoff_hz": ({"alpha": 1.0}, {"alpha": 1.0, "cutoff_hz": 2.0}),
    "taper": ({"alpha": 1.0, "taper": 0.0}, {"alpha": 1.0, "taper": 2.0}),
    "padding": ({"alpha": 1.0, "padding": "reflect"}, {"alpha": 1.0, "padding": "none"}),
    "window": ({"window": 4}, {"window": 6}),
    "kernel": ({"scope": "all", "kernel": 1}, {"scope": "all", "kernel": 7}),
    "profile": ({"profile": "a"}, {"profile": "b"}),
    "beta": ({"profile": "a", "beta": 1.05}, {"profile": "a", "beta": 8.0}),
    "temperature": ({"profile": "a", "beta": 1.05}, {"profile": "a", "beta": 1.05, "temperature": 3.0}),
    "allocation": ({"profile": "a"}, {"profile": "a", "allocation": "dynamic"}),
    "lam": (
        {"profile": "a", "allocation": "dynamic", "lam": 0.0},
        {"profile": "a", "allocation": "dynamic", "lam": 9.0},
    ),
    "floor_ratio": (
        {"profile": "a", "allocation": "dynamic", "floor_ratio": 0.0},
        {"profile": "a", "allocation": "dynamic", "floor_ratio": 1.0},
    ),
    "sinks": ({"scope": "all"}, {"scope": "all", "sinks": 8}),
    "scope": ({"scope": "audio"}, {"scope": "all"}),
    "coverage": ({"coverage": 0.0}, {"coverage": 1.0}),
}


def _selection(capture, knobs):
    knobs = dict(knobs)
    if "profile" in knobs:
        knobs["profile"] = profile_for(capture, seed=0 if knobs["profile"] == "a" else 5)
    press = op.AudioKV(compression_ratio=0.6, **{"window": WINDOW, **knobs})
    cache, _ = compress_captured(press, capture)
    return [pos.tolist() for layer in cache.layers for pos in layer.head_positions()]


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_each_knob_changes_the_selection(knob):
    _, _, capture = audio_prefill()
    a, b = KNOBS[knob]
    assert _selection(capture, a) != _selection(capture, b)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        op.AudioKV(compression_ratio=0.4, alpha=2.0)
    with pytest.raises(ValueError, match="allocation"):
        op.AudioKV(compression_ratio=0.4, allocation="greedy")
    with pytest.raises(ValueError, match="exactly one"):
        op.AudioKV()
    with pytest.raises(ValueError, match="whisper_padding"):
        op.AudioKV(compression_ratio=0.4, whisper_padding="trim")
    with pytest.raises(ValueError, match="coverage"):
        op.AudioKV(compression_ratio=0.4, coverage=1.5)
    _, _, capture = audio_prefill()
    wrong = op.HeadProfile(torch.ones(5, 2), kind="audio_heads")
    with pytest.raises(ValueError, match="5 layers"):
        compress_captured(op.AudioKV(compression_ratio=0.4, window=WINDOW, profile=wrong), capture)
    shipped = op.AudioKV(compression_ratio=0.4, profile="whisper-tiny.en")  # a shipped profile by name
    assert shipped.profile.scores.shape == (4, 6)
    with pytest.raises(op.ProfileError, match="num_layers=4, the model has 2"), shipped(tiny_model("whisper")):
        pass


# -- end to end ---------------------------------------------------------------------------------------------------
def _generate(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True, **kwargs
        )


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni", "whisper"])
def test_keep_everything_is_bit_identical_to_the_untouched_model(family):
    model = tiny_model(family)
    inputs = tiny_inputs(family, model, audio=True) if family != "whisper" else tiny_inputs(family, model)
    want = _generate(model, inputs)
    press = op.AudioKV(compression_ratio=0.0, profile=None)
    with press(model):
        got = _generate(model, inputs)
    assert torch.equal(got.sequences, want.sequences)
    assert all(torch.equal(a, b) for a, b in zip(got.logits, want.logits))
    assert not press.report.compressed


def test_generates_on_qwen2_audio_with_real_speech_and_frees_the_memory():
    model = tiny_model("qwen2_audio")
    inputs = tiny_inputs("qwen2_audio", model)  # a real speech clip from /work/shared/data/speech
    press = op.AudioKV(compression_ratio=0.5, window=WINDOW, profile=profile_for(audio_prefill()[2]))
    with press(model):
        out = _generate(model, inputs)
    report = press.report
    audio = report.modality_tokens["audio"]
    assert report.compressed and audio > 50
    heads = report.num_kv_heads
    for stats in report.layers:
        kept_audio = stats.kept_by_modality["audio"]
        assert kept_audio == heads * int(audio * 0.5) - 0 or kept_audio == heads * (int(audio * 0.5))
        assert stats.kept_by_modality["text"] == heads * report.modality_tokens["text"]
    cache = generated_cache(out)
    entry = 2 * model.config.text_config.hidden_size // model.config.text_config.num_attention_heads * 4  # fp32 K+V
    new_tokens = out.sequences.shape[1] - inputs["input_ids"].shape[1] - 1
    kept = report.tokens_after + new_tokens * heads * len(report.layers)
    assert cache_kept_bytes(cache) == kept * entry  # physical bytes = kept entries (plus generated ones)
    assert report.kv_bytes_after < report.kv_bytes_before


def test_whisper_evicts_cross_attention_entries_of_the_audio_only():
    model = tiny_model("whisper")
    inputs = tiny_inputs("whisper", model)
    n_audio = math.ceil(int(inputs["attention_mask"].sum()) / 2)
    full = _generate(model, inputs)
    for padding, beams in (("keep", 1), ("drop", 1), ("keep", 5)):
        press = op.AudioKV(compression_ratio=0.5, whisper_padding=padding, profile=None)
        with press(model):
            out = _generate(model, inputs, num_beams=beams)
        if beams == 1:  # the first token is computed with the full cross-attention cache, later ones compressed
            assert torch.equal(out.logits[0], full.logits[0]) and not torch.equal(out.logits[1], full.logits[1])
        assert out.sequences.shape[0] == 1
        report = press.report
        assert report.modality_tokens["audio"] == beams * n_audio  # every beam row counts its clip's audio
        heads = report.num_kv_heads
        for stats in report.layers:
            assert stats.kept_by_modality["audio"] == beams * heads * int(n_audio * 0.5)
            padding_kept = stats.tokens_after - stats.kept_by_modality["audio"]
            assert padding_kept == (beams * heads * (1500 - n_audio) if padding == "keep" else 0)
            assert stats.bytes_after < stats.bytes_before


def test_whisper_audio_heads_profile_moves_cross_attention_budget():
    model = tiny_model("whisper")
    inputs = tiny_inputs("whisper", model)
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
    scores = torch.zeros(layers, heads)
    scores[:, 0] = 1.0
    press = op.AudioKV(compression_ratio=0.6, profile=op.HeadProfile(scores, kind="audio_heads"), beta=1.2)
    with press(model):
        _generate(model, inputs)
    n_audio = press.report.modality_tokens["audio"]
    for stats in press.report.layers:
        audio_per_head = [k - (1500 - n_audio) for k in stats.kept_per_head]
        assert audio_per_head[0] > audio_per_head[1] == audio_per_head[2] == audio_per_head[3]
        assert sum(audio_per_head) == heads * int(n_audio * 0.4)
