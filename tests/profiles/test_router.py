"""HeadRouter's task profiles: building on a tiny Qwen2-Audio and Whisper with real audio, the statistics against
brute force, the versioned file round trip and its refusals, and routing to the nearer profile."""

from __future__ import annotations

import json

import pytest
import torch

import omnipress as op
from omnipress.generation import build_inputs
from omnipress.profiles import ModelFingerprint, ProfileError
from omnipress.profiles.router import position_prior, sparse_head_weights
from omnipress.testing import real_speech, tiny_model, tiny_processor, whisper_inputs


@pytest.fixture(scope="module")
def calibrated():
    model = tiny_model("qwen2_audio", num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4)
    processor = tiny_processor("qwen2_audio", model)

    def sample(clip, question):
        return build_inputs(model, processor, text=question, audio=[real_speech(clip)])

    tasks = {
        "semantic": [sample("harvard_01", "Transcribe the speech."), sample("harvard_02", "What is said?")],
        "acoustic": [sample("Front_Center", "Which sound is this?"), sample("Rear_Right", "Where is the speaker?")],
    }
    profiles = op.RouterProfiles.build(model, tasks, probe_layer=0, bins=8, description="harvard vs alsa clips")
    return model, tasks, profiles


def test_build_shapes_and_sparse_weights(calibrated):
    model, _, profiles = calibrated
    assert profiles.names == ("semantic", "acoustic") and profiles.probe_layer == 0
    assert profiles.centroids.shape == (2, 16) and profiles.weights.shape == (2, 8) and profiles.prior.shape == (8, 8)
    assert ((profiles.weights > 0).sum(-1) == 1).all()  # round(0.15 * 8) = 1 head per profile
    torch.testing.assert_close(profiles.weights.sum(-1), torch.ones(2))
    assert profiles.model.family == "qwen2_audio" and profiles.model.num_heads == 8
    assert profiles.calibration == {"description": "harvard vs alsa clips", "samples": {"semantic": 2, "acoustic": 2}}
    wider = op.RouterProfiles.build(model, {"all": calibrated[1]["semantic"]}, probe_layer=0, head_fraction=0.5)
    assert int((wider.weights > 0).sum()) == 4


def test_routing_picks_the_calibrated_task(calibrated):
    model, tasks, _ = calibrated
    # one sample per task: each sample is its own task's centroid
    single = {name: samples[:1] for name, samples in tasks.items()}
    profiles = op.RouterProfiles.build(model, single, probe_layer=0, bins=8)
    for idx, name in enumerate(profiles.names):
        router = op.HeadRouter(retain=0.5, layer=1, profiles=profiles)
        with router(model), torch.no_grad():
            model(**single[name][0])
        assert int(router.report.routing.argmax()) == idx
        hard = op.HeadRouter(retain=0.5, layer=1, profiles=profiles, routing="hard")
        with hard(model), torch.no_grad():
            model(**single[name][0])
        assert hard.report.routing[0].tolist() == [1.0 if i == idx else 0.0 for i in range(2)]


def test_file_round_trip_and_refusals(calibrated, tmp_path):
    model, _, profiles = calibrated
    path = profiles.save(tmp_path / "router.json")
    raw = json.loads(path.read_text())
    assert raw["kind"] == "headrouter" and raw["format_version"] >= 1 and raw["model"]["family"] == "qwen2_audio"
    loaded = op.RouterProfiles.load(path, model=model)
    for name in ("centroids", "weights", "mean", "std", "prior"):
        assert torch.equal(getattr(loaded, name), getattr(profiles, name)), name
    assert loaded.names == profiles.names and loaded.settings == profiles.settings
    other = tiny_model("qwen2_audio", num_hidden_layers=3)
    with pytest.raises(ProfileError, match="num_layers"):
        op.RouterProfiles.load(path, model=other)
    with pytest.raises(ProfileError, match="num_layers"), op.HeadRouter(layer=1, profiles=loaded)(other):
        pass
    raw["kind"] = "audio_heads"
    (tmp_path / "other.json").write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match="headrouter"):
        op.RouterProfiles.load(tmp_path / "other.json")
    raw["kind"] = "headrouter"
    raw["data"]["weights"] = raw["data"]["weights"][:1]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match="weights"):
        op.RouterProfiles.load(tmp_path / "bad.json")


def test_build_errors(calibrated):
    model, tasks, _ = calibrated
    with pytest.raises(ValueError, match="at least one task"):
        op.RouterProfiles.build(model, {})
    with pytest.raises(ValueError, match="no samples"):
        op.RouterProfiles.build(model, {"semantic": []}, probe_layer=0)
    silent = build_inputs(model, tiny_processor("qwen2_audio", model), text="No audio here.")
    with pytest.raises(ValueError, match="no audio"):
        op.RouterProfiles.build(model, {"semantic": [silent]}, probe_layer=0)
    with pytest.raises(ValueError, match="head_fraction"):
        op.RouterProfiles.build(model, tasks, head_fraction=0)


def test_position_prior_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    tables = [torch.rand(3, n, generator=g) for n in (5, 9, 2)]
    bins = 4
    got = position_prior(tables, bins)
    total, count = torch.zeros(3, bins), torch.zeros(bins)
    for a in tables:
        n = a.shape[1]
        share = a / a.sum(-1, keepdim=True)
        for beta in range(bins):
            cols = [j for j in range(n) if j * bins // n == beta]
            if cols:
                total[:, beta] += share[:, cols].mean(-1) * n
                count[beta] += 1
    raw = torch.where(count > 0, total / count.clamp(min=1), torch.ones_like(total))
    padded = torch.cat([raw[:, :1], raw, raw[:, -1:]], dim=1)
    torch.testing.assert_close(got, 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:])
    uniform = position_prior([torch.ones(2, 16)], bins)
    torch.testing.assert_close(uniform, torch.ones(2, bins))


def test_sparse_head_weights():
    score = torch.tensor([0.1, 0.4, 0.0, 0.3, 0.2])
    w = sparse_head_weights(score, 0.4, 1.0)  # 2 heads
    torch.testing.assert_close(w, torch.tensor([0.0, 4 / 7, 0.0, 3 / 7, 0.0]))
    sharp = sparse_head_weights(score, 0.4, 0.5)  # squared
    torch.testing.assert_close(sharp, torch.tensor([0.0, 16 / 25, 0.0, 9 / 25, 0.0]))
    flat = sparse_head_weights(torch.zeros(4), 0.5, 1.0)
    assert flat.sum() == 1 and int((flat > 0).sum()) == 2


def test_whisper_profiles_probe_the_cross_attention():
    model = tiny_model("whisper", decoder_layers=2)
    clips = {"semantic": [whisper_inputs(model, [real_speech("harvard_01")])]}
    clips["acoustic"] = [whisper_inputs(model, [real_speech("Front_Center")])]
    profiles = op.RouterProfiles.build(model, clips, probe_layer=0, bins=8)
    assert profiles.model.family == "whisper" and profiles.weights.shape == (2, 4)
    router = op.HeadRouter(retain=0.5, layer=1, profiles=profiles)
    with router(model), torch.no_grad():
        model(**clips["acoustic"][0])
    assert int(router.report.routing.argmax()) == 1 and router.report.pruned


def test_shipped_whisper_tiny_en_profiles():
    profiles = op.RouterProfiles.load("openai/whisper-tiny.en")
    assert profiles.model.name == "openai/whisper-tiny.en" and profiles.names == ("semantic",)
    assert profiles.probe_layer == 1 and profiles.weights.shape == (1, 6)
    profiles.check_model(ModelFingerprint("openai/whisper-tiny.en", "whisper", 4, 6, 6))
    router = op.HeadRouter(retain=0.7, layer=2, profiles=profiles)
    with pytest.raises(ProfileError, match="num_heads=6"), router(tiny_model("whisper", decoder_layers=4)):
        pass


def test_shipped_profiles_apply_by_model_name():
    model = tiny_model("whisper", decoder_layers=4, decoder_attention_heads=6, d_model=96)
    model.config._name_or_path = "openai/whisper-tiny.en"  # the shape and name of the real checkpoint
    inputs = whisper_inputs(model, [real_speech("harvard_02")])
    router = op.HeadRouter(retain=0.5)  # no profiles given: the shipped ones
    with router(model), torch.no_grad():
        model(**inputs)
    assert router.report.pruned and router.report.routing.tolist() == [[1.0]]
    explicit = op.HeadRouter(retain=0.5, profiles="whisper-tiny.en")
    with explicit(model), torch.no_grad():
        model(**inputs)
    assert torch.equal(explicit.report.keep, router.report.keep)
