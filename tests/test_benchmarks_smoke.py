"""Fast smoke test of `benchmarks/kv_compression.py`: its functions on tiny random models, in a few seconds."""

from __future__ import annotations

import json
import re

import pytest
import torch

from omnipress.testing import local_tokenizer, tiny_model
from tests.benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def kc():
    with benchmark_module("kv_compression.py") as module:
        yield module


@pytest.fixture()
def llama():
    return tiny_model("llama"), local_tokenizer("llama")


def test_kvpress_ratio_keeps_exactly_the_budget(kc):
    for n in (100, 533, 1000, 3917, 4096):
        for kept in (32, 64, 100, 128, 256):
            if kept <= n:
                assert int(n * (1 - kc.kvpress_ratio_for(n, kept))) == kept
    with pytest.raises(ValueError, match="kept"):
        kc.kvpress_ratio_for(10, 11)


def test_haystack_prompt_fits_and_splits_at_the_question(kc, llama):
    _, tokenizer = llama
    haystack = kc.Haystack(tokenizer)
    for depth in (0.0, 0.5, 1.0):
        prompt = haystack.prompt(900, depth, "Lisbon", "4721")
        assert 600 < prompt.ids.shape[1] <= 900  # whole sentences (~130 byte tokens each here)
        context = tokenizer.decode(prompt.context_ids[0])
        query = tokenizer.decode(prompt.query_ids[0])
        assert "The secret pass code for Lisbon is 4721." in context
        assert query.startswith("\n\nWhat is the secret pass code for Lisbon?")
        assert query.endswith("The secret pass code for Lisbon is")
    first = haystack.prompt(900, 0.0, "Lisbon", "4721")
    assert "The secret pass code" in tokenizer.decode(first.context_ids[0, :40])
    with pytest.raises(ValueError, match="depth"):
        haystack.prompt(900, 1.5, "Lisbon", "4721")


def test_second_niah_set_puts_its_needle_at_the_depth_and_its_prefix_last(kc, llama):
    _, tokenizer = llama
    haystack = kc.Haystack.for_set(tokenizer, "harvard:magic")
    key, value = kc.MAGIC_NEEDLES[0]
    needle = f"One of the special magic numbers for {key} is: {value}."
    harvard = {x for lst in kc.HARVARD_SENTENCES for x in lst}
    for depth in (0.0, 0.5, 1.0):
        prompt = haystack.prompt(900, depth, key, value)
        assert 840 < prompt.ids.shape[1] <= 900  # filled up to the nominal length (~40 byte tokens a sentence)
        context = tokenizer.decode(prompt.context_ids[0])
        query = tokenizer.decode(prompt.query_ids[0])
        assert context.count(needle) == 1 and "pass code" not in context
        body = context[context.index("<|im_start|>user\n") + len("<|im_start|>user\n") :]
        sentences = [x for x in re.split(r"(?<=[.!?])\s+", body) if x]
        assert set(sentences) - {needle} <= harvard
        assert sentences.index(needle) == round(depth * (len(sentences) - 1))
        assert query.startswith(f"\n\nWhat is the special magic number for {key} mentioned in the provided text?")
        assert query.endswith(f"The special magic number for {key} mentioned in the provided text is")
    assert kc.parse_niah_set("pyref:magic") == ("pyref", "magic")
    with pytest.raises(ValueError, match="HAYSTACK:NEEDLES"):
        kc.parse_niah_set("harvard:cities")


def test_niah_sets_are_reported_side_by_side_with_their_range(kc):
    def section(hits: list[bool]) -> dict:
        prompts = [
            {"depth": d, "answers": {"none": {"correct": True}, "SnapKV b=64": {"correct": h}}}
            for d, h in zip((0.0, 1.0), hits)
        ]
        accuracy = {"none": 1.0, "SnapKV b=64": sum(hits) / 2}
        return {"prompts": prompts, "accuracy": accuracy, "complete": True}

    table = kc.render_niah_sets({"pyref:passcode": section([True, True]), "harvard:magic": section([False, True])})
    assert "| SnapKV b=64 | 100.0% (2/2) | 50.0% (1/2) | 50.0 |" in table
    assert "| none | harvard:magic | 1/1 | 1/1 |" in table
    args = kc.parse_args(["--niah-sets", "pyref:passcode", "harvard:magic", "--niah-modes", "query-aware"])
    keys = kc.section_keys(args)["niah"]
    assert len(keys) == 4 and all("|set=" in key for key in keys.values())  # 4096 and 2048 tokens x 2 sets
    with pytest.raises(SystemExit):
        kc.parse_args(["--niah-sets", "essays:passcode"])


def test_text_speed_rows_bytes_and_kvpress_overlap(kc, llama):
    model, tokenizer = llama
    runner = kc.KvpressRunner() if kc.kvpress_unavailable_reason() is None else None
    budgets = [48]
    section = kc.run_text_speed(
        model,
        tokenizer,
        context_tokens=400,
        budgets=budgets,
        repeats=1,
        decode_tokens=1,
        kvpress=runner,
        warmup_tokens=0,
        log=lambda _: None,
    )
    rows = section["rows"]
    layers, heads = model.config.num_hidden_layers, model.config.num_key_value_heads
    assert rows["none"]["kept_entries"] == layers * heads * section["prompt_tokens"]
    for b in budgets:
        assert rows[f"SnapKV b={b}"]["kept_entries"] == layers * heads * b
        for method in ("SnapKV", "AdaKV", "MixKV-SnapKV", "MixKV-AdaKV"):
            row = rows[f"{method} b={b}"]
            # ragged cache: what it keeps, plus the page rounding of head-wise layers
            assert row["kept_entry_bytes"] <= row["kv_bytes"] <= 1.15 * row["kept_entry_bytes"]
            if method.endswith("SnapKV"):
                assert row["kv_bytes"] == row["kept_entry_bytes"]
            assert row["kv_bytes"] < rows["none"]["kv_bytes"]
            assert len(row["decode_ms"]) == 1 and row["prefill_median_s"] > 0
    assert "| SnapKV b=48 |" in kc.render_speed(section)
    checks = kc.targets(section, [])
    assert "| physical KV bytes within 5% of kept entries | LlamaForCausalLM: all 4 omnipress presses |" in checks
    assert "| yes | worst: " in checks  # page rounding of ragged layers stays within 5%
    if runner is not None:
        for b in budgets:
            snap = rows[f"kvpress SnapKV b={b}"]
            assert snap["kept_entries"] == layers * heads * b
            assert snap["overlap_with_omnipress"]["mean_overlap"] > 0.9  # same scores up to float rounding
            ada = rows[f"kvpress AdaKV b={b}"]
            assert ada["kv_bytes"] == rows["none"]["kv_bytes"]  # kvpress masks, frees nothing
            assert ada["kept_entries"] == layers * heads * b
        assert "omnipress / kvpress" in kc.render_kvpress(section)


def test_niah_matches_generate_and_scores_both_modes(kc, llama):
    model, tokenizer = llama
    kwargs = dict(context_tokens=400, budgets=[40], depths=[0.0, 1.0], needles=kc.NEEDLES[:1], max_new_tokens=2)
    sections = {}
    for mode in ("query-aware", "query-agnostic"):
        sections[mode] = kc.run_niah(model, tokenizer, mode=mode, log=lambda _: None, **kwargs)
        assert sections[mode]["complete"] and len(sections[mode]["prompts"]) == 2
        methods = ("SnapKV", "AdaKV", "MixKV-SnapKV", "MixKV-AdaKV")
        assert set(sections[mode]["accuracy"]) == {"none", *(f"{m} b=40" for m in methods)}
    # The captured-prefill path decodes exactly what model.generate does on the untouched model.
    prompt = kc.Haystack(tokenizer).prompt(400, 0.0, *kc.NEEDLES[0])
    with torch.no_grad():
        out = model.generate(prompt.ids, max_new_tokens=2, do_sample=False, min_new_tokens=2)
    expected = tokenizer.decode(out[0, prompt.ids.shape[1] :], skip_special_tokens=True)
    got = sections["query-aware"]["prompts"][0]["answers"]["none"]["answer"]
    assert expected.startswith(got)
    # Interrupted runs resume: finished prompts are kept, not recomputed.
    partial = {"prompts": sections["query-aware"]["prompts"][:1]}
    seen = []
    resumed = kc.run_niah(model, tokenizer, mode="query-aware", done=partial, log=seen.append, **kwargs)
    assert len(seen) == 1 and resumed["prompts"][0] is partial["prompts"][0]
    assert "Per depth" in kc.render_niah({f"{m}": s for m, s in sections.items()})


def test_vlm_section_counts_kept_entries_per_span(kc):
    section = kc.run_vlm("qwen2_vl", budgets=[64], repeats=1, log=lambda _: None)
    rows = section["rows"]
    snap = rows["SnapKV b=64"]
    assert set(snap["modality_tokens"]) == {"text", "image", "video"}
    assert sum(snap["kept_per_head"].values()) == pytest.approx(64)
    assert snap["kv_bytes"] == snap["kept_entry_bytes"] < rows["none"]["kv_bytes"]
    assert "video kept/head" in kc.render_vlm(section)


def test_result_store_resumes_and_report_only_prints(kc, tmp_path, capsys):
    from _common import ResultStore

    path = tmp_path / "results.json"
    store = ResultStore(path)
    store.put("a", {"x": 1})
    assert json.loads(path.read_text()) == {"a": {"x": 1}}
    assert ResultStore(path).get("a") == {"x": 1}
    assert ResultStore(path, resume=False).get("a") is None
    assert kc.main(["--report-only", "--out", str(path)]) == 0
    assert "Targets" in capsys.readouterr().out


def test_verdict_reads_interleaved_rounds(kc):
    assert kc._verdict(0.99, [1.02, 0.99, 0.98], 1.0) == "yes"
    assert kc._verdict(1.01, [1.03, 0.99, 1.01], 1.0) == "within noise"
    assert kc._verdict(1.20, [1.15, 1.20, 1.25], 1.10) == "NO"


def test_streaming_video_runs_each_section_with_its_own_options(tmp_path, capsys):
    with benchmark_module("streaming_video.py") as sv:
        args = sv.parse_args(["--sections", "prefill", "--device", "cuda", "--prefill-args", "--frames 4 --repeats 2"])
        assert sv.section_argv("prefill", args) == ["--device", "cuda", "--frames", "4", "--repeats", "2"]
        out = tmp_path / "encoder.json"
        argv = ["--sections", "encoder", "--threads", "1"]
        argv += ["--encoder-args", f"--tiny --towers siglip --frames 2 --out {out}"]
        assert sv.main(argv) == 0
        assert "## Streaming video: encoder" in capsys.readouterr().out
        assert list(json.loads(out.read_text())["towers"]) == ["siglip (2 layers)"]
