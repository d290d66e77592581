"""Audio-critical head profiling: the alignment scores against brute force, a planted alignment head recovered on
a real (tiny) Qwen2-Audio, Whisper cross-attention profiling and the `omnipress profile` CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from omnipress.adapters import get_adapter
from omnipress.cli import main
from omnipress.profiles import HeadProfile, audio_head_profile, calibration_sample
from omnipress.profiles.alignment import (
    monotonicity_scores,
    spearman,
    timestamp_scores,
    token_windows,
    words_to_tokens,
)
from omnipress.profiles.audio_heads import transcript_audio_attention
from omnipress.testing import tiny_inputs, tiny_model


def brute_spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var > 0 else 0.0


def test_spearman_matches_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (6, 12), generator=g).float()
    y = torch.randint(0, 7, (6, 12), generator=g).float()
    got = spearman(x, y)
    for row in range(6):
        assert abs(float(got[row]) - brute_spearman(x[row].tolist(), y[row].tolist())) < 1e-6
    assert float(spearman(torch.ones(5), torch.arange(5.0))) == 0.0  # constant: no correlation


def random_attention(seed: int, layers=2, heads=3, steps=9, audio=15) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(layers, heads, steps, audio + 4, generator=g).pow(4)
    probs = probs / probs.sum(-1, keepdim=True)
    return probs[..., :audio]  # normalised over every key, sliced to the audio


def test_monotonicity_matches_its_definition():
    attention = random_attention(1)
    got = monotonicity_scores(attention)
    for layer in range(2):
        for head in range(3):
            a = attention[layer, head]
            peaks = [float(a[t].argmax()) for t in range(a.shape[0])]
            rho = brute_spearman(list(map(float, range(len(peaks)))), peaks)
            mass = sum(float(a[t].sum()) for t in range(a.shape[0])) / a.shape[0]
            assert abs(float(got[layer, head]) - max(0.0, rho) * mass) < 1e-6


def test_timestamp_scores_match_their_definitions():
    attention = random_attention(2, steps=6, audio=20)
    intervals = [(0.0, 0.1), (0.1, 0.2), (math.inf, math.inf), (0.2, 0.35), (0.35, 0.5), (0.5, 0.6)]
    windows = token_windows(intervals, 20, tokens_per_second=25.0, tolerance=0.05)
    for t, (start, end) in enumerate(intervals):
        for j in range(20):
            assert bool(windows[t, j]) == (start - 0.05 <= j / 25.0 <= end + 0.05)
    hit, mass = timestamp_scores(attention, windows, "hit"), timestamp_scores(attention, windows, "mass")
    used = [t for t in range(6) if bool(windows[t].any())]
    assert used == [0, 1, 3, 4, 5]  # the empty interval (punctuation) is skipped
    for layer in range(2):
        for head in range(3):
            a = attention[layer, head]
            hits = [bool(windows[t, int(a[t].argmax())]) for t in used]
            inside = [float((a[t] * windows[t]).sum() / a[t].sum()) for t in used]
            share = sum(float(a[t].sum()) for t in used) / len(used)
            assert abs(float(hit[layer, head]) - sum(hits) / len(used)) < 1e-6
            assert abs(float(mass[layer, head]) - sum(inside) / len(used) * share) < 1e-6
    assert words_to_tokens([(0.0, 0.5), (0.5, 1.0)], [0, 0, 1, -1]) == [
        (0.0, 0.5),
        (0.0, 0.5),
        (0.5, 1.0),
        (math.inf, math.inf),
    ]
    with pytest.raises(ValueError, match="no transcript token"):
        timestamp_scores(attention, torch.zeros(6, 20, dtype=torch.bool))


PLANT_LAYER, PLANT_HEAD, PAIR = 1, 2, 3  # query head 2 of layer 1 (KV head 1), RoPE pair 3


def planted_model():
    """Tiny Qwen2-Audio whose (layer 1, query head 2) looks `D` positions back from each query: with constant
    pre-RoPE query and key (biases only, on one rotary pair), the logit is `A cos(theta (n - m) + D theta)`,
    largest at key `n = m - D`, so the head's peak over the audio advances with the transcript step."""
    model = tiny_model("qwen2_audio")
    inputs = tiny_inputs("qwen2_audio", model)
    adapter = get_adapter(model)
    span = adapter.spans(inputs["input_ids"], **{k: v for k, v in inputs.items() if k != "input_ids"}).of("audio")[0]
    n = inputs["input_ids"].shape[1]
    cfg = model.config.text_config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    theta = cfg.rope_parameters["rope_theta"] ** (-2 * PAIR / head_dim)
    distance = n - span.start - 12  # the first transcript query looks at audio token 12
    attn = adapter.attention_modules[PLANT_LAYER]
    q_rows = slice(PLANT_HEAD * head_dim, (PLANT_HEAD + 1) * head_dim)
    kv = PLANT_HEAD // group
    k_rows = slice(kv * head_dim, (kv + 1) * head_dim)
    with torch.no_grad():
        attn.q_proj.weight[q_rows] = 0
        attn.q_proj.bias[q_rows] = 0
        attn.q_proj.bias[q_rows.start + PAIR] = 400 * math.cos(-distance * theta)
        attn.q_proj.bias[q_rows.start + PAIR + head_dim // 2] = 400 * math.sin(-distance * theta)
        attn.k_proj.weight[k_rows] = 0
        attn.k_proj.bias[k_rows] = 0
        attn.k_proj.bias[k_rows.start + PAIR] = 1.0
    return model, inputs, span


def test_profiling_recovers_a_planted_alignment_head():
    model, inputs, span = planted_model()
    transcript = torch.randint(30, 250, (16,), generator=torch.Generator().manual_seed(0))
    sample = calibration_sample(model, inputs, transcript)
    attention, rate = transcript_audio_attention(model, sample)
    assert rate == 25.0 and attention.shape == (2, 4, 16, span.length)
    peaks = attention[PLANT_LAYER, PLANT_HEAD].argmax(-1)
    assert peaks.tolist() == list(range(12, 28))  # one audio token further per step
    profile = audio_head_profile(model, [sample], name="planted")
    per_query_head = torch.tensor(profile.meta["query_head_scores"])
    assert per_query_head.flatten().argmax() == PLANT_LAYER * 4 + PLANT_HEAD
    assert float(per_query_head[PLANT_LAYER, PLANT_HEAD]) > 0.95
    assert profile.scores.flatten().argmax() == PLANT_LAYER * 2 + PLANT_HEAD // 2  # its KV head wins too
    assert profile.kind == "audio_heads" and profile.settings["score"] == "monotonicity"
    assert profile.fingerprint.family == "qwen2_audio" and profile.model == "planted"
    # with word timestamps (one token per audio token from 12 on): the hit score is 1 for the planted head
    times = [((12 + i) / 25.0, (12 + i) / 25.0) for i in range(16)]
    timed = calibration_sample(model, inputs, transcript, word_times=times)
    hits = audio_head_profile(model, [timed], tolerance=0.0)
    assert hits.settings["score"] == "hit" and float(torch.tensor(hits.meta["query_head_scores"])[1, 2]) == 1.0


def test_whisper_profiles_decoder_cross_attention_over_the_audio_only():
    model = tiny_model("whisper")
    inputs = tiny_inputs("whisper", model)
    sample = calibration_sample(model, inputs, [30, 40, 50, 60, 70, 80])
    attention, rate = transcript_audio_attention(model, sample)
    n_audio = math.ceil(int(inputs["attention_mask"].sum()) / 2)
    assert rate == 50.0 and attention.shape == (2, 4, 6, n_audio)
    assert bool((attention.sum(-1) <= 1 + 1e-5).all())
    profile = audio_head_profile(model, [sample])
    assert profile.scores.shape == (2, 4) and profile.calibration["samples"] == 1
    assert profile.settings["attention"] == "decoder cross-attention"
    with pytest.raises(ValueError, match="at least 2 tokens"):
        calibration_sample(model, inputs, [30])
    with pytest.raises(ValueError, match="word_times"):
        audio_head_profile(model, [sample], score="hit")


def test_bad_calibration_inputs_are_refused():
    model = tiny_model("qwen2_audio")
    text_only = tiny_inputs("qwen2_audio", model, audio=False)
    with pytest.raises(ValueError, match="no audio tokens"):
        audio_head_profile(model, [calibration_sample(model, text_only, [40, 41, 42])])
    with pytest.raises(ValueError, match="Qwen2-Audio"):
        audio_head_profile(tiny_model("llama"), [])
    with pytest.raises(ValueError, match="at least one"):
        audio_head_profile(model, [])


def test_cli_profiles_audio_heads_from_a_manifest(tmp_path, capsys):
    out = tmp_path / "p.json"
    args = [
        "profile",
        "audio-heads",
        "/work/shared/data/speech/manifest.jsonl",
        "--family",
        "whisper",
        "--include",
        "harvard_0[12].wav",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    raw = json.loads(out.read_text())
    assert raw["kind"] == "audio_heads" and raw["calibration"]["clips"] == ["harvard_01.wav", "harvard_02.wav"]
    assert HeadProfile.load(out).scores.shape == (2, 4)
    assert main(["profile", "show", str(out), "--quiet"]) == 0
    assert "strongest heads" in capsys.readouterr().out
    assert main(["profile", "audio-heads", "missing.jsonl", "--out", str(out), "--quiet"]) == 1
    assert main(["profile", "show", "no-such-profile", "--quiet"]) == 1


def test_qwen2_5_omni_thinker_profiles_its_audio_span():
    model = tiny_model("qwen2_5_omni")
    inputs = tiny_inputs("qwen2_5_omni", model, image=False, audio=True)
    sample = calibration_sample(model, inputs, [40, 41, 42, 43, 44])
    attention, _ = transcript_audio_attention(model, sample)
    n_audio = int((inputs["input_ids"] == model.config.audio_token_id).sum())
    cfg = model.config.text_config
    assert attention.shape == (cfg.num_hidden_layers, cfg.num_attention_heads, 5, n_audio)
    profile = audio_head_profile(model, [sample])
    assert profile.scores.shape == (cfg.num_hidden_layers, cfg.num_key_value_heads)
    assert profile.fingerprint.family == "qwen2_5_omni"
