"""HeadRouter: the math against brute force, and every knob wired (tiny Qwen2-Audio / Whisper, real speech)."""

from __future__ import annotations

import math

import pytest
import torch

import omnipress as op
from omnipress.profiles import ModelFingerprint
from omnipress.tokens.headrouter import (
    audio_bins,
    debias_detrend,
    debias_prior,
    debiased_attention,
    head_behaviour,
    head_weighted_scores,
    normalize_audio,
    route,
)
from omnipress.tokens.inllm import fastv_scores
from omnipress.tokens.inllm.base import Probe
from omnipress.tokens.inllm.scoring import top_fraction, top_fraction_by_segment


def _attention(seed=0, bsz=2, heads=4, seq=12):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(bsz, heads, seq, generator=g)
    a = a / a.sum(-1, keepdim=True)
    c = torch.zeros(bsz, seq, dtype=torch.bool)
    c[0, 2:10] = True
    c[1, 1:6] = True
    return a, c


def _profiles(heads=4, names=("semantic", "acoustic"), bins=4, seed=0, probe_layer=1, model=None):
    g = torch.Generator().manual_seed(seed)
    p = len(names)
    weights = torch.rand(p, heads, generator=g)
    weights[:, 0] = 0
    return op.RouterProfiles(
        model or ModelFingerprint(),
        probe_layer,
        names,
        centroids=torch.randn(p, 2 * heads, generator=g),
        weights=weights / weights.sum(-1, keepdim=True),
        mean=torch.rand(2 * heads, generator=g),
        std=torch.rand(2 * heads, generator=g) + 0.5,
        prior=torch.rand(heads, bins, generator=g) + 0.5,
    )


# -- math -----------------------------------------------------------------------------------------------------------
def test_uniform_head_weights_give_fastv_scores():
    a, c = _attention()
    router = op.HeadRouter(retain=0.5, debias="none", renormalize=False, query="last", segments=0)
    probe = Probe(c, torch.ones_like(c), a)
    torch.testing.assert_close(router.score(probe)[c], fastv_scores(a)[c], rtol=1e-6, atol=1e-7)  # the audio
    fastv = op.FastV(retain=0.5)
    assert torch.equal(router.select(probe), fastv.select(probe))


def test_segment_wise_ranking_keeps_the_top_share_of_every_segment():
    a, c = _attention()
    probe = Probe(c, torch.ones_like(c), a)
    for segments in (1, 2, 3, 32):
        router = op.HeadRouter(retain=0.5, debias="none", segments=segments)
        want = top_fraction_by_segment(router.score(probe), c, 0.5, segments)
        assert torch.equal(router.select(probe), want)
    # a probe that prefers the first half of the audio: one segment keeps only that half, two keep half of each
    ramp = torch.linspace(1.0, 0.0, 8).view(1, 1, 8).expand(1, 4, 8).contiguous()
    audio = torch.ones(1, 8, dtype=torch.bool)
    flat = Probe(audio, audio, ramp)
    whole = op.HeadRouter(retain=0.5, debias="none", renormalize=False, segments=0).select(flat)
    halves = op.HeadRouter(retain=0.5, debias="none", renormalize=False, segments=2).select(flat)
    assert whole[0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert halves[0].nonzero().flatten().tolist() == [0, 1, 4, 5]


def test_audio_bins_and_prior_debias_match_a_loop():
    a, c = _attention()
    prior = torch.rand(4, 3) + 0.5
    bins = audio_bins(c, 3)
    got = debias_prior(a, c, prior)
    for b in range(2):
        cols = c[b].nonzero().squeeze(-1).tolist()
        for r, j in enumerate(cols):
            assert bins[b, j] == r * 3 // len(cols)
            for h in range(4):
                assert got[b, h, j].item() == pytest.approx(a[b, h, j].item() / prior[h, r * 3 // len(cols)].item())
        assert bool((got[b][:, ~c[b]] == 0).all())


def test_detrend_removes_a_log_linear_ramp():
    _, c = _attention()
    pattern = torch.rand(2, 4, 12, generator=torch.Generator().manual_seed(3)) + 0.5
    rank = (c.long().cumsum(-1) - 1).clamp(min=0).float() / c.sum(-1, keepdim=True)
    ramp = torch.exp(3.0 * rank).unsqueeze(1)  # recency bias
    got = normalize_audio(debias_detrend(pattern * ramp, c), c)
    ref = normalize_audio(debias_detrend(pattern, c), c)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


def test_head_behaviour_matches_a_loop():
    a, c = _attention()
    debiased = a * 2.0
    got = head_behaviour(a, debiased, c)
    for b in range(2):
        cols = c[b]
        for h in range(4):
            p = debiased[b, h, cols] / debiased[b, h, cols].sum()
            entropy = -(p * p.log()).sum().item()
            assert got[b, h].item() == pytest.approx(1 - entropy / math.log(int(cols.sum())), abs=1e-5)
            assert got[b, 4 + h].item() == pytest.approx(a[b, h, cols].sum().item(), abs=1e-6)


def test_routing_picks_the_nearer_profile():
    mean, std = torch.zeros(4), torch.ones(4)
    centroids = torch.tensor([[0.0, 0, 0, 0], [4.0, 4, 4, 4]])
    behaviour = torch.tensor([[0.5, 0.2, 0.1, 0.3], [3.5, 4.2, 4.0, 3.9]])
    soft = route(behaviour, mean, std, centroids)
    assert soft.argmax(-1).tolist() == [0, 1] and torch.allclose(soft.sum(-1), torch.ones(2))
    d = torch.cdist(behaviour, centroids) ** 2
    torch.testing.assert_close(soft, (-d).softmax(-1))
    torch.testing.assert_close(route(behaviour, mean, std, centroids, temperature=3.0), (-d / 3).softmax(-1))
    assert route(behaviour, mean, std, centroids, hard=True).tolist() == [[1, 0], [0, 1]]
    shifted = route(behaviour, torch.full((4,), 4.0), std, centroids)  # z-scoring is applied
    assert shifted.argmax(-1).tolist() == [0, 0]


def test_head_weighted_scores():
    w = torch.tensor([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    a, _ = _attention()
    got = head_weighted_scores(w, a)
    torch.testing.assert_close(got[0], a[0, 0])
    torch.testing.assert_close(got[1], a[1].mean(0))


def test_every_knob_reaches_the_scores():
    a, c = _attention()
    probe = Probe(c, torch.ones_like(c), a)
    profiles = _profiles()
    base = dict(retain=0.5, profiles=profiles)
    router = op.HeadRouter(**base)
    debiased = debiased_attention(a, c, debias="prior", prior=profiles.prior, renormalize=True)
    mix = route(head_behaviour(a, debiased, c), profiles.mean, profiles.std, profiles.centroids)
    expected = head_weighted_scores(mix @ profiles.weights, debiased)
    torch.testing.assert_close(router.score(probe), expected)
    assert torch.equal(router._routing(), mix)
    variants = [
        dict(debias="detrend"),
        dict(debias="none"),
        dict(renormalize=False),
        dict(routing="hard"),
        dict(temperature=0.05),
        dict(force_profile="acoustic"),
    ]
    for knob in variants:
        other = op.HeadRouter(**base, **knob).score(probe)
        assert not torch.allclose(other, expected), knob
    forced = op.HeadRouter(**base, force_profile="semantic").score(probe)
    torch.testing.assert_close(forced, head_weighted_scores(profiles.weights[:1].expand(2, -1), debiased))
    assert torch.equal(router.select(probe), top_fraction_by_segment(expected, c, 0.5, 32))  # the default
    assert torch.equal(op.HeadRouter(**base, segments=0).select(probe), top_fraction(expected, c, 0.5))


def test_knob_errors():
    profiles = _profiles()
    from omnipress.testing import tiny_model

    with pytest.raises(ValueError, match="needs task profiles"), op.HeadRouter()(tiny_model("qwen2_audio")):
        pass
    with pytest.raises(ValueError, match="debias"):
        op.HeadRouter(profiles=profiles, debias="rope")
    with pytest.raises(ValueError, match="routing"):
        op.HeadRouter(profiles=profiles, routing="argmax")
    with pytest.raises(ValueError, match="temperature"):
        op.HeadRouter(profiles=profiles, temperature=0)
    with pytest.raises(ValueError, match="query"):
        op.HeadRouter(profiles=profiles, query="first")
    with pytest.raises(ValueError, match="segments"):
        op.HeadRouter(profiles=profiles, segments=-1)
    with pytest.raises(ValueError, match="force_profile"):
        op.HeadRouter(profiles=profiles, force_profile="music")
    with pytest.raises(ValueError, match="probe layer 1"):
        op.HeadRouter(profiles=profiles, layer=3)
    with pytest.raises(TypeError, match="RouterProfiles"):
        op.HeadRouter(profiles={"semantic": 1})


# -- wired on models ------------------------------------------------------------------------------------------------
def test_headrouter_on_qwen2_audio_prunes_with_routing():
    from omnipress.testing import tiny_inputs, tiny_model

    from .inllm.reference import encoded_inputs

    model = tiny_model("qwen2_audio", num_hidden_layers=3, attn_implementation="eager")
    inputs = encoded_inputs(model, tiny_inputs("qwen2_audio", model))
    profiles = _profiles(heads=4, model=ModelFingerprint.of(model))
    router = op.HeadRouter(retain=0.5, layer=2, profiles=profiles)
    with router(model), torch.no_grad():
        model(**inputs)
    report = router.report
    assert report.pruned and report.routing.shape == (1, 2)
    # reference: the eager attention of layer 1, every text token after the audio, through the pure functions
    with torch.no_grad():
        attention = model(**inputs, output_attentions=True).attentions[1]  # (1, H, N, N)
    ids = inputs["input_ids"]
    c = ids == model.config.audio_token_id
    start = int(c[0].nonzero().max()) + 1
    a = attention[:, :, start:].mean(2)
    expected = router.select(Probe(c, torch.ones_like(c), a))
    assert torch.equal(report.keep & c, expected)
    uniform = op.HeadRouter(retain=0.5, layer=2, debias="none", renormalize=False, query="last", segments=0)
    fastv = op.FastV(retain=0.5, layer=2)
    for method in (uniform, fastv):
        with method(model), torch.no_grad():
            model(**inputs)
    assert torch.equal(uniform.report.keep, fastv.report.keep) and uniform.report.routing is None
    wrong = _profiles(heads=4, model=ModelFingerprint(family="whisper"))
    with pytest.raises(op.ProfileError, match="whisper"), op.HeadRouter(profiles=wrong)(model):
        pass
