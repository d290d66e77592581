"""The method-spec registry: parsing, building every registered method, and unavailable methods."""

from __future__ import annotations

import pytest

import omnipress as op
from omnipress.asr import METHODS, MethodUnavailableError, build_method, parse_method_list, parse_method_spec
from omnipress.asr import methods as registry


def test_specs_parse_with_the_meaning_of_their_ratio():
    specs = parse_method_list("full, audiokv:0.4,headrouter:0.7,snapkv:0.4")
    assert [s.label for s in specs] == ["full", "audiokv:0.4", "headrouter:0.7", "snapkv:0.4"]
    assert METHODS["snapkv"].ratio_meaning == "compression" and METHODS["fastv"].ratio_meaning == "retain"
    for bad, message in [
        ("bogus:0.3", "unknown method 'bogus'"),
        ("snapkv", "needs a ratio"),
        ("snapkv:1.0", r"in \[0, 1\)"),
        ("fastv:0", r"in \(0, 1\]"),
        ("full:0.3", "no ratio"),
        ("snapkv:x", "must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_method_spec(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_method_list("snapkv:0.4,snapkv:0.4")


def test_knobs_in_a_spec_reach_the_method_and_its_label():
    specs = parse_method_list(
        "audiokv[coverage=0.5;alpha=1]:0.4, headrouter[segments=8;debias=detrend]:0.7, mixkv[use_value_norm=false]:0.3"
    )
    assert [s.label for s in specs] == [
        "audiokv[alpha=1;coverage=0.5]:0.4",
        "headrouter[debias=detrend;segments=8]:0.7",
        "mixkv[use_value_norm=false]:0.3",
    ]
    press = build_method(specs[0], profile=None)
    assert press.coverage == 0.5 and press.alpha == 1 and press.compression_ratio == 0.4
    router = build_method(specs[1], profiles=None)
    assert router.segments == 8 and router.debias == "detrend" and router.retain == 0.7
    assert build_method("audiokv-topk[coverage=0.25]:0.4").coverage == 0.25  # knobs beat the registry's defaults
    assert build_method("headrouter[routing=hard;force_profile=none;renormalize=false]:0.5").renormalize is False
    mix = build_method(specs[2])
    assert mix.use_value_norm is False and mix.host.compression_ratio == 0.3
    for bad, message in [
        ("audiokv[coverage]:0.4", "name=value"),
        ("audiokv[coverage=1:0.4", "name\\[knob=value"),
        ("audiokv[retain=0.2]:0.4", "after the colon"),
        ("audiokv[alpha=1;alpha=0]:0.4", "twice"),
        ("full[alpha=1]", "no knobs"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_method_spec(bad)
    with pytest.raises(ValueError, match="AudioKV takes no cov"):
        build_method("audiokv[cov=1]:0.4")
    with pytest.raises(ValueError, match="coverage must lie"):
        build_method("audiokv[coverage=2]:0.4")


def test_kv_presses_get_the_compression_and_pruners_the_retained_share():
    assert build_method("full") is None
    expected = {
        "snapkv": op.SnapKV,
        "adakv": op.AdaKV,
        "pyramidkv": op.PyramidKV,
        "h2o": op.H2O,
        "streamingllm": op.StreamingLLM,
        "knorm": op.KNorm,
        "random": op.RandomPress,
    }
    for name, cls in expected.items():
        press = build_method(f"{name}:0.4", window=8)
        assert type(press) is cls and press.compression_ratio == 0.4 and press.window == 8
    mix = build_method("mixkv:0.6")
    assert isinstance(mix, op.MixKV) and isinstance(mix.host, op.SnapKV) and mix.host.compression_ratio == 0.6
    audiokv = build_method("audiokv:0.4", profile=None, retain=0.2)  # options a class does not take are dropped
    assert isinstance(audiokv, op.AudioKV) and audiokv.compression_ratio == 0.4
    for name, cls in {"fastv": op.FastV, "dart": op.DART, "frame": op.FrameAudioPruner}.items():
        pruner = build_method(f"{name}:0.7")
        assert type(pruner) is cls and pruner.retain == 0.7
    assert build_method("random-tokens:0.3").retain == 0.3
    # the ablations: the paper-style whole-span top-k without temporal coverage
    assert audiokv.coverage == 0.75 and build_method("audiokv-topk:0.4").coverage == 0.0
    topk = build_method("headrouter-topk:0.7", profiles=None)
    assert isinstance(topk, op.HeadRouter) and topk.segments == 0 and build_method("headrouter:0.7").segments == 32


def test_an_unavailable_method_is_a_clear_error(monkeypatch):
    kind = registry.MethodKind("ghost", "omnipress.not_written_yet:Ghost", "kv")
    monkeypatch.setitem(registry.METHODS, "ghost", kind)
    spec = parse_method_spec("ghost:0.4")
    with pytest.raises(MethodUnavailableError, match=r"'ghost'.*not available"):
        build_method(spec)


def test_summary_table_columns_stay_aligned_with_long_labels():
    from omnipress.asr.evaluate import MethodSummary, summary_table

    rows = [
        MethodSummary("full", 2, 0.2, 16.9, 17.72 * 2**20, 17.58 * 2**20),
        MethodSummary("headrouter[debias=detrend;segments=8]:0.7", 2, 0.5, 16.6, 17.5 * 2**20, 17.3 * 2**20),
    ]
    lines = summary_table(rows).splitlines()
    assert len({len(line) for line in lines}) == 1  # header, rule and rows equally wide
    assert lines[3].startswith("headrouter[debias=detrend;segments=8]:0.7 ") and lines[2].split()[1] == "20.00"
