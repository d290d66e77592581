"""Smoke test of `benchmarks/decode_speed.py`: its main path on a tiny model (`--quick`), in a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.benchmark_modules import benchmark_module

LABELS = ("none", "SnapKV", "PyramidKV", "AdaKV", "MixKV(AdaKV)")


@pytest.fixture(scope="module")
def ds():
    with benchmark_module("decode_speed.py") as module:
        yield module


def table_rows(text: str, length: int, batch: int) -> dict[str, list[str]]:
    """Cells of the main table's rows of one configuration, by press label."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 12 and cells[:2] == [str(length), str(batch)]:
            rows[cells[2]] = cells
    return rows


def measurements(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "measurement"]


def test_quick_run_rows_resume_and_report_only(ds, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    args = ["--quick", "--device", "cpu", "--batches", "2", "--rounds", "1", "--out", str(out)]
    assert ds.main(args) == 0
    text = capsys.readouterr().out
    assert "`tiny`: 2 layers, 4 query / 2 KV heads" in text and "torch " in text and "transformers " in text
    rows = table_rows(text, 256, 2)
    assert set(rows) == set(LABELS)
    for label, cells in rows.items():
        prefill, decode, tokens_s = float(cells[3]), float(cells[5]), float(cells[6])
        assert 0 < prefill < 60 and 0 < decode < 10_000
        assert tokens_s == pytest.approx(2 * 1000 / decode, rel=0.02)
        assert cells[8] == "n/a"  # no peak memory on CPU
        if label != "none":
            assert float(cells[9]) < float(rows["none"][9])  # KV MiB
            assert cells[10].endswith("x") and float(cells[10][:-1]) < 0.5  # KV vs none
    assert rows["none"][4] == "1.00x" and rows["none"][7] == "1.00x"
    assert "#### MixKV(AdaKV) prefill overhead over AdaKV" in text
    assert "#### Targets (issue 7, CPU)" in text and "no configuration with a 16k+ prompt was measured" in text

    records = measurements(out)
    assert len(records) == len(LABELS)
    by_press = {r["press"]: r for r in records}
    none = by_press["none"]
    for press, r in by_press.items():
        assert r["status"] == "ok", r.get("message")
        assert r["generated_tokens"] == 1 + r["new_tokens"] and len(r["step_ms"]) == r["new_tokens"]
        assert r["prefill_s"] > 0 and r["decode_ms"] > 0
        if press != "none":
            assert r["kv_bytes"] < none["kv_bytes"]
            report = r["report"]
            assert report["tokens_after"] < report["tokens_before"]
            assert report["kv_bytes_after"] < report["kv_bytes_before"]
            assert r["kv_bytes"] >= report["kv_bytes_after"]  # prompt entries kept + the decoded tokens

    # Running the same command again resumes: nothing is measured twice, the tables are the same.
    assert ds.main(args) == 0
    assert len(measurements(out)) == len(LABELS)
    again = capsys.readouterr().out
    assert table_rows(again, 256, 2) == rows
    assert ds.main(["--report-only", "--out", str(out)]) == 0
    assert table_rows(capsys.readouterr().out, 256, 2) == rows


def test_oom_is_recorded_and_the_run_goes_on(ds, tmp_path, capsys, monkeypatch):
    real = ds.run_generate

    def failing(model, press, ids, new_tokens):
        if type(press).__name__ == "PyramidKV":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 42 GiB")
        if type(press).__name__ == "SnapKV":
            raise ValueError("broken press")
        return real(model, press, ids, new_tokens)

    monkeypatch.setattr(ds, "run_generate", failing)
    out = tmp_path / "results.jsonl"
    args = ["--quick", "--device", "cpu", "--batches", "1", "--rounds", "2", "--warmup-tokens", "128"]
    assert ds.main([*args, "--presses", "none,snapkv", "pyramidkv", "--out", str(out)]) == 1  # the error counts
    text = capsys.readouterr().out
    rows = table_rows(text, 256, 1)
    assert rows["PyramidKV"][3] == "OOM" and rows["SnapKV"][3] == "error" and float(rows["none"][5]) > 0
    records = measurements(out)
    assert [r["status"] for r in records if r["press"] == "pyramidkv"] == ["OOM"]  # later rounds skipped
    assert [r["status"] for r in records if r["press"] == "snapkv"] == ["error", "error"]
    assert sum(r["status"] == "ok" for r in records) == 2


def _record(length, batch, press, round_, prefill_s, decode_ms, device="cuda (fake)"):
    return {
        "type": "measurement",
        "device": device,
        "shape": "qwen2-7b",
        "shape_description": "fake",
        "dtype": "bfloat16",
        "budget": 1024,
        "window": 32,
        "new_tokens": 32,
        "length": length,
        "batch": batch,
        "press": press,
        "round": round_,
        "status": "ok",
        "prefill_s": prefill_s,
        "decode_ms": decode_ms,
        "kv_bytes": 1,
        "peak_bytes": 2**30,
    }


def test_gpu_targets_pass_fail_and_not_run(ds):
    decode = {"none": 20.0, "snapkv": 20.5, "pyramidkv": 20.0, "adakv": 22.0, "mixkv-adakv": 20.9}
    prefill = {"none": 2.0, "snapkv": 2.0, "pyramidkv": 2.0, "adakv": 2.0, "mixkv-adakv": 2.2}
    records = [_record(32768, 1, p, r, prefill[p], decode[p]) for p in decode for r in range(3)]
    records += [_record(32768, 8, p, 0, 10.0, {"none": 90.0, "adakv": 30.0}[p]) for p in ("none", "adakv")]
    records.append({**_record(32768, 8, "mixkv-adakv", 0, 10.0, 1.0), "status": "OOM"})
    lines = ds.check_targets(ds.summarise(records), cuda=True)
    result = {(line[0].split(":")[0], line[1]): line[3] for line in lines}
    assert result[("batch 1 / 32k", "32768x1 SnapKV")] == "PASS"
    assert result[("batch 1 / 32k", "32768x1 AdaKV")] == "FAIL"  # 1.10x
    assert result[("batch 1 / 32k", "32768x1 MixKV(AdaKV)")] == "PASS"  # 1.045x
    assert result[("batch 8 / 32k", "32768x8 AdaKV")] == "PASS"  # exactly 3x
    assert result[("batch 8 / 32k", "32768x8 MixKV(AdaKV)")] == "NOT RUN"  # OOM
    assert result[("MixKV(AdaKV) prefill overhead over AdaKV < 5%", "32768x1")] == "FAIL"  # +10%
    assert result[("MixKV(AdaKV) prefill overhead over AdaKV < 5%", "32768x8")] == "NOT RUN"


def test_cpu_targets_at_16k(ds):
    decode = {"none": 100.0, "snapkv": 40.0, "pyramidkv": 101.0, "adakv": 46.0, "mixkv-adakv": 46.5}
    records = [_record(16384, 1, p, 0, 1.0, ms, device="cpu") for p, ms in decode.items()]
    lines = ds.check_targets(ds.summarise(records), cuda=False)
    result = {(line[0][:5], line[1]): line[3] for line in lines}
    assert result[("decod", "16384x1 AdaKV")] == "PASS"  # 1.15x
    assert result[("decod", "16384x1 MixKV(AdaKV)")] == "FAIL"  # 1.1625x
    assert result[("16k+ ", "16384x1 SnapKV")] == "PASS"
    assert result[("16k+ ", "16384x1 PyramidKV")] == "FAIL"


def test_report_only_shows_skipped_and_oom_rows(ds, tmp_path):
    records = ds.Records(tmp_path / "r.jsonl")
    for r in [_record(32768, 16, "none", 0, 1.0, 1.0), _record(32768, 16, "adakv", 0, 1.0, 1.0)]:
        records.add(r)
    records.add({**_record(32768, 16, "snapkv", 0, 1.0, 1.0), "status": "OOM", "message": "CUDA out of memory"})
    records.add({**_record(65536, 16, "none", 0, 1.0, 1.0), "type": "skip", "reason": "too long"})
    with (tmp_path / "r.jsonl").open("a") as f:
        f.write('{"type": "measurement", "key": "cut by a cr')  # a crash in the middle of a line
    records = ds.Records(tmp_path / "r.jsonl")
    records.add({**_record(32768, 16, "pyramidkv", 0, 2.0, 1.0)})  # starts a new line
    assert len(ds.Records(tmp_path / "r.jsonl").measurements()) == 4
    text = ds.report(ds.Records(tmp_path / "r.jsonl"))
    assert "| 32768 | 16 | SnapKV | OOM |" in text and "| 32768 | 16 | PyramidKV | 2.00 | 2.00x |" in text
    assert "Skipped: 65536x16 (too long)." in text
    assert "| 32768 | 16 | AdaKV | 1.00 | 1.00x |" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quick_run_on_cuda_records_peak_memory(ds, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert ds.main(["--quick", "--device", "cuda", "--batches", "2", "--rounds", "1", "--out", str(out)]) == 0
    rows = table_rows(capsys.readouterr().out, 256, 2)
    assert set(rows) == set(LABELS)
    for cells in rows.values():
        assert float(cells[8]) > 0  # peak GiB
    for r in measurements(out):
        assert r["status"] == "ok" and r["peak_bytes"] > 0
