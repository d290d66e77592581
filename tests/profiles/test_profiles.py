"""Head profiles: JSON round trip, validation, and measurement against brute force."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.kv.session import capture_prefill
from omnipress.profiles import HeadProfile, modality_head_profile, redundancy_profile
from omnipress.testing import tiny_inputs, tiny_model


def test_round_trip_and_validation(tmp_path):
    profile = HeadProfile(torch.rand(3, 2), kind="visual", model="m", meta={"n": 1})
    profile.save(tmp_path / "p.json")
    back = HeadProfile.load(tmp_path / "p.json")
    assert torch.equal(back.scores, profile.scores) and back.kind == "visual" and back.meta == {"n": 1}
    with pytest.raises(ValueError, match="non-negative"):
        HeadProfile(-torch.ones(2, 2))
    with pytest.raises(ValueError, match="table"):
        HeadProfile(torch.ones(4))
    with pytest.raises(ValueError, match="has 3 layers"):
        profile.check(4, 2)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        HeadProfile.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        HeadProfile.load(tmp_path / "missing.json")


def _brute_pairwise_cosine(keys):
    k = torch.nn.functional.normalize(keys.float(), dim=-1)
    n = k.shape[0]
    sims = [float(k[i] @ k[j]) for i in range(n) for j in range(n) if i != j]
    return sum(sims) / len(sims)


def test_redundancy_profile_is_the_mean_pairwise_cosine():
    model = tiny_model("qwen2_vl")
    prompts = [tiny_inputs("qwen2_vl", model, question=q) for q in ("What is shown?", "Describe it.")]
    profile = redundancy_profile(model, prompts)
    expected = torch.zeros_like(profile.scores)
    for inputs in prompts:
        capture, _ = capture_prefill(model, **inputs)
        for layer, (_, keys, _, _) in enumerate(capture.layers):
            for head in range(keys.shape[1]):
                expected[layer, head] += max(0.0, _brute_pairwise_cosine(keys[0, head])) / len(prompts)
    torch.testing.assert_close(profile.scores, expected, atol=1e-4, rtol=1e-4)


def test_visual_head_profile_drives_sparsemm():
    model = tiny_model("qwen2_vl")
    inputs = tiny_inputs("qwen2_vl", model)
    profile = modality_head_profile(model, [inputs], modality="vision", window=4)
    assert profile.scores.shape == (model.config.text_config.num_hidden_layers, 2)
    assert bool((profile.scores > 0).all()) and bool((profile.scores <= 1 + 1e-5).all())
    press = op.SparseMM(budget=20, window=4, profile=profile)
    with press(model):
        model.generate(**inputs, max_new_tokens=2)
    assert press.report.compressed
    with pytest.raises(ValueError, match="no audio tokens"):
        modality_head_profile(model, [inputs], modality="audio")
