"""Smoke test of `benchmarks/audio.py` at tiny size: list split, method order, calibration, resumable run, table."""

from __future__ import annotations

import json
import types

import pytest

from omnipress.asr import read_manifest
from omnipress.testing import local_tokenizer, tiny_model
from tests.benchmark_modules import benchmark_module

from .asr.real import SPEECH, needs_speech


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("audio.py", "audio_bench") as module:
        yield module


def test_method_order_puts_every_method_at_the_first_ratio_first(bench):
    specs = bench.method_specs("snapkv,audiokv", "0.4,0.8", "fastv", "0.7")
    assert [s.label for s in specs] == ["full", "snapkv:0.4", "audiokv:0.4", "snapkv:0.8", "audiokv:0.8", "fastv:0.7"]
    knobs = bench.method_specs("audiokv[coverage=0.5]", "0.4", "headrouter[segments=8]", "0.7")
    assert [s.label for s in knobs] == ["full", "audiokv[coverage=0.5]:0.4", "headrouter[segments=8]:0.7"]


@needs_speech
def test_tiny_run_calibrates_on_list_1_scores_list_2_and_resumes(bench, tmp_path):
    calibration, evaluation = bench.split_lists(read_manifest(SPEECH / "manifest.jsonl"))
    assert [i.key for i in calibration][-1] == "harvard_long_1.wav" and evaluation[0].key == "harvard_11.wav"
    assert not {i.key for i in calibration} & {i.key for i in evaluation}
    model = tiny_model("whisper")
    import transformers as T

    processor = types.SimpleNamespace(
        feature_extractor=T.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000), tokenizer=local_tokenizer()
    )
    # the tiny model has 2 decoder layers: probe at 0, prune at 1
    options, notes = bench.calibrate(model, processor, calibration[:1], tmp_path / "profiles", probe_layer=0)
    assert set(options) == {"profile", "profiles"}, notes
    options["layer"] = 1
    specs, skipped = bench.available(
        bench.method_specs("snapkv,audiokv[coverage=0]", "0.5", "headrouter", "0.5"), options
    )
    assert not skipped and len(specs) == 4
    out = tmp_path / "audio.jsonl"
    logged: list[str] = []
    summaries = bench.run(model, processor, evaluation[:1], specs, out, num_beams=1, options=options, log=logged.append)
    assert [s.method for s in summaries] == [s.label for s in specs] and len(logged) == 4
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(r["num_beams"] == 1 and r["kv_bytes"] > 0 for r in records)
    assert all(r["compressed"] for r in records if r["method"].startswith(("snapkv", "audiokv")))
    logged.clear()
    again = bench.run(model, processor, evaluation[:1], specs, out, num_beams=1, options=options, log=logged.append)
    assert not logged and [s.to_dict() for s in again] == [s.to_dict() for s in summaries]  # resumed, nothing redone
    assert len(out.read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="num_beams=1"):
        bench.run(model, processor, evaluation[:1], specs, out, num_beams=5, options=options)
    table = bench.report(out)
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert [(name.strip(), ratio.strip()) for name, ratio in rows] == [
        ("full", "-"),
        ("snapkv", "0.5"),
        ("audiokv[coverage=0]", "0.5"),
        ("headrouter", "0.5"),
    ]
